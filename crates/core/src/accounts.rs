//! [`Accounts`]: creating and listing accounts, their limits and webhook secrets, and their API
//! tokens: issuing, listing, revoking and authenticating them.
//!
//! Reads that every request makes (a token, an account's limits and secrets) are cached on
//! each node for at most [`FRESHNESS`], so a revocation or a rotation made on another node
//! takes effect everywhere within that time; on the node that made it, at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use crate::account::{Account, Limits, RetiringSecret, Token, new_webhook_secret};
use crate::error::{Error, Result};
use crate::id::AccountId;
use crate::secret::Secret;
use crate::store::{
    self, Cursor, DynStore, Effect, Entity, Kind, LedgerEntry, ListQuery, Op, Reason, StoreExt,
    Write,
};
use crate::time::Timestamp;

/// How long a node trusts what it read of a token or an account.
pub const FRESHNESS: Duration = Duration::from_secs(2);

/// How often a token's `last_used_at` is written at most.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// The longest account or token name.
pub const MAX_NAME_CHARS: usize = 100;

/// Settings of the accounts service.
#[derive(Clone, Debug)]
pub struct AccountsConfig {
    /// Credits a new account is granted (the seeds' 10 free credits).
    pub signup_grant: i64,
    /// How long a rotated-out webhook secret keeps signing.
    pub retiring_secret_grace: Duration,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            signup_grant: 10,
            retiring_secret_grace: crate::credits::RETIRING_SECRET_GRACE,
        }
    }
}

/// A page of accounts, newest first.
#[derive(Clone, Debug, Default)]
pub struct AccountPage {
    /// The accounts.
    pub items: Vec<Arc<Account>>,
    /// Where the next page starts.
    pub next: Option<Cursor>,
}

/// Who a request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The account.
    pub account: AccountId,
    /// True for the admin token: it acts on any account.
    pub admin: bool,
    /// The token's id (`None` for the admin token).
    pub token: Option<String>,
}

impl Caller {
    /// The admin.
    pub fn admin() -> Self {
        Self {
            account: AccountId::admin(),
            admin: true,
            token: None,
        }
    }

    /// True if the caller may see what `owner` owns.
    pub fn may_see(&self, owner: &AccountId) -> bool {
        self.admin || *owner == self.account
    }
}

/// What a node read (the record, or that there is none) and when.
type Fresh<T> = (Option<Arc<T>>, Instant);

/// The accounts service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Accounts {
    store: DynStore,
    config: Arc<AccountsConfig>,
    tokens: Arc<Cache<String, Fresh<Token>>>,
    accounts: Arc<Cache<AccountId, Fresh<Account>>>,
}

fn check_name(name: &str) -> Result<()> {
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "a name is at most {MAX_NAME_CHARS} characters, without control characters"
        )));
    }
    Ok(())
}

impl Accounts {
    /// The service over `store`.
    pub fn new(store: DynStore, config: AccountsConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
            tokens: Arc::new(Cache::new(10_000)),
            accounts: Arc::new(Cache::new(10_000)),
        }
    }

    /// The settings.
    pub fn config(&self) -> &AccountsConfig {
        &self.config
    }

    /// Creates an account and posts its sign-up grant, in one write. The username `admin` is
    /// the admin token's and cannot be taken.
    pub async fn create(&self, id: AccountId, name: &str) -> Result<Account> {
        check_name(name)?;
        if id == AccountId::admin() {
            return Err(Error::AccountExists(id));
        }
        let now = Timestamp::now();
        let account = Account::new(id.clone(), name, now);
        let mut write = Write::new(id.clone()).op(Op::Insert(account.to_record()?));
        if self.config.signup_grant > 0 {
            write.effects.push(Effect::Post(Box::new(LedgerEntry {
                account: id.clone(),
                id: "grant:signup".into(),
                delta: self.config.signup_grant,
                held: 0,
                reason: Reason::Grant,
                reference: None,
                memo: Some("sign-up".into()),
                at: now,
            })));
        }
        match self.store.write(&write).await {
            Ok(_) => {
                self.accounts.remove(&id);
                Ok(account)
            }
            Err(store::Error::Exists(_)) => Err(Error::AccountExists(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// The account, read from the store.
    pub async fn get(&self, id: &AccountId) -> Result<Arc<Account>> {
        let found = self
            .store
            .get_uncached(&Account::key_of(id))
            .await?
            .map(|s| s.decode::<Account>())
            .transpose()?;
        self.accounts
            .insert(id.clone(), (found.clone(), Instant::now()));
        found.ok_or_else(|| Error::AccountNotFound(id.clone()))
    }

    /// The account as this node saw it at most [`FRESHNESS`] ago; `None` if there is none.
    pub async fn cached(&self, id: &AccountId) -> Result<Option<Arc<Account>>> {
        if let Some((seen, at)) = self.accounts.get(id)
            && at.elapsed() < FRESHNESS
        {
            return Ok(seen);
        }
        match self.get(id).await {
            Ok(a) => Ok(Some(a)),
            Err(Error::AccountNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Accounts, newest first.
    pub async fn list(&self, after: Option<Cursor>, limit: usize) -> Result<AccountPage> {
        let mut query = ListQuery::of(Kind::Account, limit.max(1));
        query.after = after;
        let page = self.store.list(&query).await?;
        let items = page
            .items
            .iter()
            .map(|s| s.decode::<Account>())
            .collect::<store::Result<_>>()?;
        Ok(AccountPage {
            items,
            next: page.next,
        })
    }

    /// Changes an account with `change`, retrying on concurrent changes.
    async fn update(
        &self,
        id: &AccountId,
        change: impl Fn(&mut Account, Timestamp),
    ) -> Result<Account> {
        for _ in 0..16 {
            let current = self
                .store
                .get_entity::<Account>(&Account::key_of(id))
                .await?
                .ok_or_else(|| Error::AccountNotFound(id.clone()))?;
            let mut next = (*current.value).clone();
            change(&mut next, Timestamp::now());
            let write = Write::new(id.clone()).op(Op::Update {
                record: next.to_record()?,
                expected: current.revision,
            });
            match self.store.write(&write).await {
                Ok(_) => {
                    self.accounts.remove(id);
                    return Ok(next);
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(store::Error::NotFound(_)) => return Err(Error::AccountNotFound(id.clone())),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Busy(format!("account {id}")))
    }

    /// Sets an account's limits.
    pub async fn set_limits(&self, id: &AccountId, limits: Limits) -> Result<Account> {
        self.update(id, |a, _| a.limits = limits).await
    }

    /// Renames an account.
    pub async fn rename(&self, id: &AccountId, name: &str) -> Result<Account> {
        check_name(name)?;
        self.update(id, |a, _| a.name = name.to_owned()).await
    }

    /// Gives an account a new webhook secret; the old one keeps signing beside it for
    /// [`AccountsConfig::retiring_secret_grace`], so receivers can switch without missing the
    /// webhooks of predictions already running.
    pub async fn rotate_webhook_secret(&self, id: &AccountId) -> Result<Account> {
        let grace = self.config.retiring_secret_grace;
        let fresh = new_webhook_secret();
        self.update(id, |a, now| {
            let old = std::mem::replace(&mut a.webhook_secret, fresh.clone());
            a.retiring_webhook_secret = Some(RetiringSecret {
                secret: old,
                until: now.plus(grace),
            });
        })
        .await
    }

    /// Issues a token for `owner`: the record and the token itself, which is shown once and
    /// never stored.
    pub async fn create_token(&self, owner: &AccountId, name: &str) -> Result<(Token, Secret)> {
        check_name(name)?;
        self.get(owner).await?;
        let (token, text) = Token::generate(owner, name, Timestamp::now());
        let write = Write::new(owner.clone()).op(Op::Insert(token.to_record()?));
        self.store.write(&write).await?;
        Ok((token, text))
    }

    /// An account's tokens, newest first.
    pub async fn tokens(&self, owner: &AccountId) -> Result<Vec<Arc<Token>>> {
        let mut all = Vec::new();
        let mut query = ListQuery::of(Kind::Token, 500);
        query.owner = Some(owner.clone());
        loop {
            let page = self.store.list(&query).await?;
            for s in &page.items {
                all.push(s.decode::<Token>()?);
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Revokes `owner`'s token `id`: at once on this node, within [`FRESHNESS`] on others.
    pub async fn revoke_token(&self, owner: &AccountId, id: &str) -> Result<()> {
        let key = Token::key_of(id);
        let found = self.store.get_entity::<Token>(&key).await?;
        if found.is_none_or(|t| t.value.owner != *owner) {
            return Err(Error::TokenNotFound(id.to_owned()));
        }
        self.store
            .write(&Write::new(owner.clone()).op(Op::Delete(key)))
            .await?;
        self.tokens.remove(id);
        Ok(())
    }

    /// The caller a bearer token acts as, or `None` if it is no live token. `admin` is the
    /// admin token, compared in constant time.
    pub async fn authenticate(&self, text: &str, admin: &Secret) -> Result<Option<Caller>> {
        let Some(parsed) = Token::parse(text) else {
            return Ok(admin.matches(text).then(Caller::admin));
        };
        let id = parsed.id.to_owned();
        let token = match self.tokens.get(&id) {
            Some((seen, at)) if at.elapsed() < FRESHNESS => seen,
            _ => {
                let found = self
                    .store
                    .get_uncached(&Token::key_of(&id))
                    .await?
                    .map(|s| s.decode::<Token>())
                    .transpose()?;
                self.tokens
                    .insert(id.clone(), (found.clone(), Instant::now()));
                found
            }
        };
        let Some(token) = token.filter(|t| t.verify(text)) else {
            return Ok(None);
        };
        self.touch(&token);
        Ok(Some(Caller {
            account: token.owner.clone(),
            admin: false,
            token: Some(token.id.clone()),
        }))
    }

    /// Records that a token was used, at most once a minute, in the background.
    fn touch(&self, token: &Arc<Token>) {
        let now = Timestamp::now();
        if token
            .last_used_at
            .is_some_and(|at| now.since(at) < LAST_USED_EVERY)
        {
            return;
        }
        let mut used = (**token).clone();
        used.last_used_at = Some(now);
        self.tokens
            .insert(used.id.clone(), (Some(Arc::new(used)), Instant::now()));
        let store = self.store.clone();
        let id = token.id.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            let Ok(Some(current)) = store.get_entity::<Token>(&Token::key_of(&id)).await else {
                return;
            };
            let mut next = (*current.value).clone();
            next.last_used_at = Some(now);
            let Ok(record) = next.to_record() else {
                return;
            };
            let write = Write::new(next.owner.clone()).op(Op::Update {
                record,
                expected: current.revision,
            });
            // Losing to a concurrent touch or a revoke is fine: someone else wrote.
            if let Err(e) = store.write(&write).await
                && !matches!(e, store::Error::Conflict { .. } | store::Error::NotFound(_))
            {
                tracing::debug!(error = %e, "could not record a token's last use");
            }
        });
    }

    /// The secrets `owner`'s webhooks are signed with now (current first), or `None` for an
    /// account that does not exist (the admin's predictions use the server's secret).
    pub async fn signing_secrets(&self, owner: &AccountId) -> Result<Option<Vec<Secret>>> {
        Ok(self
            .cached(owner)
            .await?
            .map(|a| a.signing_secrets(Timestamp::now())))
    }

    /// Forgets what this node cached of an account.
    pub fn forget(&self, id: &AccountId) {
        self.accounts.remove(id);
    }

    /// The limits of `owner` (none for the admin or an unknown account).
    pub async fn limits(&self, owner: &AccountId) -> Result<Limits> {
        Ok(self
            .cached(owner)
            .await?
            .map(|a| a.limits)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn accounts() -> Accounts {
        Accounts::new(Arc::new(MemoryStore::new()), AccountsConfig::default())
    }

    fn id(text: &str) -> AccountId {
        AccountId::parse(text).unwrap()
    }

    #[tokio::test]
    async fn accounts_are_created_once_with_their_grant() {
        let svc = accounts();
        svc.create(id("alice"), "Alice").await.unwrap();
        assert!(matches!(
            svc.create(id("alice"), "Again").await,
            Err(Error::AccountExists(_))
        ));
        assert!(matches!(
            svc.create(AccountId::admin(), "x").await,
            Err(Error::AccountExists(_))
        ));
        let balance = svc.store.balance(&id("alice")).await.unwrap();
        assert_eq!(balance.balance, 10);
        let page = svc.list(None, 10).await.unwrap();
        assert_eq!(page.items.len(), 1);
    }

    #[tokio::test]
    async fn tokens_authenticate_until_revoked() {
        let svc = accounts();
        let admin = Secret::new("admin-token");
        svc.create(id("alice"), "Alice").await.unwrap();
        svc.create(id("bob"), "Bob").await.unwrap();
        let (token, text) = svc.create_token(&id("alice"), "laptop").await.unwrap();
        let caller = svc
            .authenticate(text.expose(), &admin)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((caller.account, caller.admin), (id("alice"), false));
        assert_eq!(
            svc.authenticate("admin-token", &admin).await.unwrap(),
            Some(Caller::admin())
        );
        assert_eq!(svc.authenticate("nope", &admin).await.unwrap(), None);
        // Bob cannot revoke Alice's token.
        assert!(matches!(
            svc.revoke_token(&id("bob"), &token.id).await,
            Err(Error::TokenNotFound(_))
        ));
        svc.revoke_token(&id("alice"), &token.id).await.unwrap();
        assert_eq!(svc.authenticate(text.expose(), &admin).await.unwrap(), None);
        assert!(svc.tokens(&id("alice")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_revocation_on_another_node_takes_effect_within_the_freshness() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let here = Accounts::new(store.clone(), AccountsConfig::default());
        let there = Accounts::new(store, AccountsConfig::default());
        let admin = Secret::new("admin-token");
        here.create(id("alice"), "Alice").await.unwrap();
        let (token, text) = here.create_token(&id("alice"), "t").await.unwrap();
        assert!(
            there
                .authenticate(text.expose(), &admin)
                .await
                .unwrap()
                .is_some()
        );
        here.revoke_token(&id("alice"), &token.id).await.unwrap();
        tokio::time::sleep(FRESHNESS + Duration::from_millis(100)).await;
        assert!(
            there
                .authenticate(text.expose(), &admin)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_account_created_on_another_node_is_seen_within_the_freshness() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let here = Accounts::new(store.clone(), AccountsConfig::default());
        let there = Accounts::new(store, AccountsConfig::default());
        // `there` looks before the account exists, and remembers that it does not.
        assert!(there.cached(&id("late")).await.unwrap().is_none());
        here.create(id("late"), "Late").await.unwrap();
        tokio::time::sleep(FRESHNESS + Duration::from_millis(100)).await;
        assert!(there.cached(&id("late")).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn rotation_keeps_the_old_secret_signing() {
        let svc = accounts();
        let before = svc.create(id("alice"), "Alice").await.unwrap();
        let after = svc.rotate_webhook_secret(&id("alice")).await.unwrap();
        assert_ne!(before.webhook_secret, after.webhook_secret);
        let secrets = svc.signing_secrets(&id("alice")).await.unwrap().unwrap();
        assert_eq!(secrets, vec![after.webhook_secret, before.webhook_secret]);
        assert_eq!(svc.signing_secrets(&id("nobody")).await.unwrap(), None);
    }
}
