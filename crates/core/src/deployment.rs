//! Deployments, as Replicate has them: a named, account-owned route to a model version with its
//! own configuration, stored as one record of [`Kind::Deployment`] per deployment, and the
//! operations of [`Predictions`] over them (create, read, list, update, delete).
//!
//! - **Releases.** A deployment shows its current release only (Replicate's shape). Creating
//!   it is release 1; every update is a compare-and-set that stores release `n + 1`, so two
//!   racing updates both get their own number and neither is lost.
//! - **Concurrency.** A deployment's predictions are queued on their own topic,
//!   [`Deployment::queue`], not the model's: a worker counts them apart and claims at most
//!   `max_instances` of them at once (the engine reads the limit from the record), so more
//!   wait in the queue instead of being refused. `min_instances` is stored and shown; Augur
//!   keeps no instances warm per deployment.
//! - **Ownership.** The record key is `owner/name` in the owner's partition: an account only
//!   ever reaches its own deployments (another's is not found, like a missing one).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{AccountId, ModelName};
use crate::service::Predictions;
use crate::store::{self, Cursor, Entity, Key, Kind, ListQuery, Op, Record, StoreExt, Write};
use crate::time::Timestamp;
use crate::workflow::RunPage;

/// The queue topic prefix of deployments' jobs: `deployment:<owner>/<name>`.
pub const QUEUE_PREFIX: &str = "deployment:";

/// The most instances a deployment may ask for.
pub const MAX_INSTANCES: u32 = 1000;

/// How a release runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// The hardware SKU (one of those `GET /v1/hardware` lists).
    pub hardware: String,
    /// Instances kept warm: stored and shown, not acted on.
    pub min_instances: u32,
    /// The most predictions of the deployment a worker runs at once.
    pub max_instances: u32,
}

/// One release of a deployment: the model version and configuration it routes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// 1 for the first; each update adds 1.
    pub number: u32,
    /// The model.
    pub model: ModelName,
    /// The model version id.
    pub version: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// Who made it.
    pub created_by: AccountId,
    /// How it runs.
    pub configuration: Configuration,
}

/// A deployment: its current release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The account it belongs to.
    pub owner: AccountId,
    /// Its name, unique within the account (`[a-z0-9_.-]`, 1 to 64 characters).
    pub name: String,
    /// The release predictions go to.
    pub current_release: Release,
    /// When release 1 was made.
    pub created_at: Timestamp,
}

/// What an update changes; `None` keeps the current value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentChange {
    /// A new model (with `version`).
    pub model: Option<ModelName>,
    /// A new version.
    pub version: Option<String>,
    /// New hardware.
    pub hardware: Option<String>,
    /// New `min_instances`.
    pub min_instances: Option<u32>,
    /// New `max_instances`.
    pub max_instances: Option<u32>,
}

impl Deployment {
    /// The record key of `owner`'s deployment `name`.
    pub fn key_of(owner: &AccountId, name: &str) -> Key {
        Key::owned(Kind::Deployment, format!("{owner}/{name}"), owner)
    }

    /// `owner/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The queue topic of its predictions' jobs.
    pub fn queue(&self) -> String {
        format!("{QUEUE_PREFIX}{}", self.full_name())
    }

    /// The owner and name a queue topic of [`Deployment::queue`] names, if it is one.
    pub fn parse_queue(queue: &str) -> Option<(AccountId, String)> {
        let (owner, name) = queue.strip_prefix(QUEUE_PREFIX)?.split_once('/')?;
        Some((AccountId::parse(owner).ok()?, name.to_owned()))
    }

    /// True if `name` may name a deployment (a model name's part: `[a-z0-9_.-]`, 1 to 64
    /// characters, not starting with `.`).
    pub fn is_valid_name(name: &str) -> bool {
        ModelName::from_parts("x", name).is_ok()
    }

    /// Checks a configuration's numbers: `max_instances` 1 to [`MAX_INSTANCES`],
    /// `min_instances` at most `max_instances`.
    pub fn check_configuration(c: &Configuration) -> std::result::Result<(), (String, String)> {
        if !(1..=MAX_INSTANCES).contains(&c.max_instances) {
            return Err((
                "max_instances".into(),
                format!(
                    "max_instances must be between 1 and {MAX_INSTANCES}, got {}",
                    c.max_instances
                ),
            ));
        }
        if c.min_instances > c.max_instances {
            return Err((
                "min_instances".into(),
                format!(
                    "min_instances ({}) must not exceed max_instances ({})",
                    c.min_instances, c.max_instances
                ),
            ));
        }
        Ok(())
    }
}

impl Entity for Deployment {
    const KIND: Kind = Kind::Deployment;

    fn key(&self) -> Key {
        Self::key_of(&self.owner, &self.name)
    }

    fn owner(&self) -> &AccountId {
        &self.owner
    }

    fn to_record(&self) -> store::Result<Record> {
        store::body_record(self.key(), &self.owner, self.created_at, None, self)
    }

    fn from_record(record: &Record) -> store::Result<Self> {
        store::decode_json(&record.body)
    }
}

/// How often an update starts over after losing the compare-and-set.
const MAX_UPDATE_ATTEMPTS: usize = 16;

impl Predictions {
    /// Stores a new deployment at release 1; [`Error::DeploymentExists`] if the owner has one
    /// with that name.
    pub async fn create_deployment(&self, deployment: &Deployment) -> Result<()> {
        let write = Write::new(deployment.owner.clone()).op(Op::Insert(deployment.to_record()?));
        match self.store().write(&write).await {
            Ok(_) => Ok(()),
            Err(store::Error::Exists(_)) => Err(Error::DeploymentExists(deployment.full_name())),
            Err(e) => Err(e.into()),
        }
    }

    /// `owner`'s deployment `name`, if there is one.
    pub async fn find_deployment(
        &self,
        owner: &AccountId,
        name: &str,
    ) -> Result<Option<Deployment>> {
        Ok(self
            .store()
            .get_entity::<Deployment>(&Deployment::key_of(owner, name))
            .await?
            .map(|d| Arc::unwrap_or_clone(d.value)))
    }

    /// `owner`'s deployment `name`, or [`Error::DeploymentNotFound`].
    pub async fn get_deployment(&self, owner: &AccountId, name: &str) -> Result<Deployment> {
        self.find_deployment(owner, name)
            .await?
            .ok_or_else(|| Error::DeploymentNotFound(format!("{owner}/{name}")))
    }

    /// Makes a new release of `owner`'s deployment `name` with `change` applied, made by
    /// `by`. `check` sees the new release before it is stored and may refuse it (an unknown
    /// model, a bad configuration).
    pub async fn update_deployment(
        &self,
        owner: &AccountId,
        name: &str,
        by: &AccountId,
        change: &DeploymentChange,
        mut check: impl FnMut(&Release) -> Result<()> + Send,
    ) -> Result<Deployment> {
        let key = Deployment::key_of(owner, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let Some(current) = self.store().get_entity::<Deployment>(&key).await? else {
                return Err(Error::DeploymentNotFound(format!("{owner}/{name}")));
            };
            let old = &current.value.current_release;
            let configuration = Configuration {
                hardware: change
                    .hardware
                    .clone()
                    .unwrap_or_else(|| old.configuration.hardware.clone()),
                min_instances: change
                    .min_instances
                    .unwrap_or(old.configuration.min_instances),
                max_instances: change
                    .max_instances
                    .unwrap_or(old.configuration.max_instances),
            };
            let release = Release {
                number: old.number + 1,
                model: change.model.clone().unwrap_or_else(|| old.model.clone()),
                version: change
                    .version
                    .clone()
                    .unwrap_or_else(|| old.version.clone()),
                created_at: Timestamp::now().max(old.created_at),
                created_by: by.clone(),
                configuration,
            };
            check(&release)?;
            let next = Deployment {
                current_release: release,
                ..(*current.value).clone()
            };
            let write = Write::new(owner.clone()).op(Op::Update {
                record: next.to_record()?,
                expected: current.revision,
            });
            match self.store().write(&write).await {
                Ok(_) => return Ok(next),
                Err(store::Error::Conflict { .. }) => tokio::task::yield_now().await,
                Err(store::Error::NotFound(_)) => {
                    return Err(Error::DeploymentNotFound(format!("{owner}/{name}")));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Busy(format!("deployment {owner}/{name}")))
    }

    /// Deletes `owner`'s deployment `name`; [`Error::DeploymentNotFound`] if there is none.
    /// Its predictions stay (they name it as text).
    pub async fn delete_deployment(&self, owner: &AccountId, name: &str) -> Result<()> {
        self.get_deployment(owner, name).await?;
        let write = Write::new(owner.clone()).op(Op::Delete(Deployment::key_of(owner, name)));
        self.store().write(&write).await?;
        Ok(())
    }

    /// `owner`'s deployments (every account's for `None`), newest first.
    pub async fn list_deployments(
        &self,
        owner: Option<&AccountId>,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<RunPage<Deployment>> {
        let mut query = ListQuery::of(Kind::Deployment, limit.max(1));
        query.owner = owner.cloned();
        query.after = after;
        let page = self.store().list(&query).await?;
        let items = page
            .items
            .iter()
            .map(|s| s.decode::<Deployment>().map(Arc::unwrap_or_clone))
            .collect::<store::Result<Vec<_>>>()?;
        Ok(RunPage {
            items,
            next: page.next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_round_trip_and_names_are_checked() {
        let d = Deployment {
            owner: AccountId::parse("acme").unwrap(),
            name: "web".into(),
            current_release: Release {
                number: 1,
                model: ModelName::parse("augur/echo").unwrap(),
                version: "v".into(),
                created_at: Timestamp::from_micros(1),
                created_by: AccountId::parse("acme").unwrap(),
                configuration: Configuration {
                    hardware: "cpu".into(),
                    min_instances: 0,
                    max_instances: 2,
                },
            },
            created_at: Timestamp::from_micros(1),
        };
        assert_eq!(d.queue(), "deployment:acme/web");
        assert_eq!(
            Deployment::parse_queue(&d.queue()),
            Some((d.owner.clone(), "web".into()))
        );
        assert_eq!(Deployment::parse_queue("augur/echo"), None);
        assert!(Deployment::is_valid_name("my-app_1.0"));
        for bad in ["", "A", "a/b", ".x", &"x".repeat(65)] {
            assert!(!Deployment::is_valid_name(bad), "{bad}");
        }
        let mut c = d.current_release.configuration.clone();
        assert!(Deployment::check_configuration(&c).is_ok());
        c.max_instances = 0;
        assert_eq!(
            Deployment::check_configuration(&c).unwrap_err().0,
            "max_instances"
        );
        c.max_instances = 1;
        c.min_instances = 2;
        assert_eq!(
            Deployment::check_configuration(&c).unwrap_err().0,
            "min_instances"
        );
    }
}
