//! [`Conn`]: one multiplexed, self-reconnecting connection to a single Redis or to a Redis
//! Cluster, behind the `redis` crate's `ConnectionLike`, so that every operation is written
//! once for both.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, RedisFuture, Value};

use crate::config::{RedisOptions, Topology};
use crate::error::Error;

/// A connection to the whole store. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A single server, reconnected by the `redis` crate's connection manager; every call
    /// (waiting for a reconnect included) is bounded by the duration.
    Single(ConnectionManager, Duration),
    /// A cluster: commands are routed by the slot of their first key; redirections,
    /// topology changes and reconnects are handled by the `redis` crate.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            // The manager's response timeout covers one command on a live connection, not
            // the wait for a reconnect, which could take several connect timeouts.
            Conn::Single(c, limit) => {
                let limit = *limit;
                Box::pin(async move {
                    tokio::time::timeout(limit, c.req_packed_command(cmd))
                        .await
                        .unwrap_or_else(|_| Err(timed_out_error()))
                })
            }
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c, limit) => {
                let limit = *limit;
                Box::pin(async move {
                    tokio::time::timeout(limit, c.req_packed_commands(pipeline, offset, count))
                        .await
                        .unwrap_or_else(|_| Err(timed_out_error()))
                })
            }
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c, _) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Connects (failing with an unavailable error when no server answers in time).
    pub(crate) async fn connect(options: &RedisOptions) -> Result<Self, Error> {
        let connect_timeout = options.timeout.max(Duration::from_secs(1));
        match &options.topology {
            Topology::Single { url } => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(options.timeout))
                    .set_connection_timeout(Some(connect_timeout))
                    // Reconnect attempts back off up to 1 s, so a restarted server is found
                    // again within about a second; a request waits for at most these attempts.
                    .set_number_of_retries(4)
                    .set_max_delay(Duration::from_secs(1));
                let manager = tokio::time::timeout(
                    connect_timeout * 2,
                    ConnectionManager::new_with_config(client, config),
                )
                .await
                .map_err(|_| timed_out("connecting"))??;
                Ok(Conn::Single(manager, options.timeout))
            }
            Topology::Cluster { seeds } => {
                let client = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                    .connection_timeout(connect_timeout)
                    .response_timeout(options.timeout)
                    .overall_response_timeout(Some(options.timeout))
                    .retries(6)
                    .max_retry_wait(1_000)
                    .build()?;
                let conn = tokio::time::timeout(connect_timeout * 2, client.get_async_connection())
                    .await
                    .map_err(|_| timed_out("connecting"))??;
                Ok(Conn::Cluster(conn))
            }
        }
    }

    /// The value of a configuration parameter on every primary (`CONFIG GET`).
    pub(crate) async fn config_get(&mut self, name: &str) -> Result<Vec<String>, Error> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        let reply = match self {
            Conn::Single(..) => cmd.query_async::<Value>(self).await?,
            Conn::Cluster(c) => {
                c.route_command(
                    cmd,
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                )
                .await?
            }
        };
        let mut values = Vec::new();
        collect_config(&reply, name, &mut values)?;
        Ok(values)
    }
}

/// Finds `name`'s values in a `CONFIG GET` reply: `[name, value]`, a map, or (from a
/// cluster) a map of node to either.
fn collect_config(reply: &Value, name: &str, out: &mut Vec<String>) -> Result<(), Error> {
    let as_text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match reply {
        Value::Array(items) if items.len() == 2 && as_text(&items[0]).as_deref() == Some(name) => {
            out.extend(as_text(&items[1]));
        }
        Value::Array(items) if items.is_empty() => {}
        Value::Map(pairs) => {
            for (k, v) in pairs {
                if as_text(k).as_deref() == Some(name) {
                    out.extend(as_text(v));
                } else {
                    collect_config(v, name, out)?;
                }
            }
        }
        Value::ServerError(e) => {
            return Err(Error::Redis(redis::RedisError::from(e.clone())));
        }
        other => {
            return Err(Error::Reply(format!("CONFIG GET {name}: {other:?}")));
        }
    }
    Ok(())
}

fn timed_out_error() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer from Redis within the timeout",
    ))
}

fn timed_out(what: &str) -> Error {
    Error::Redis(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out"),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn config_replies_of_every_shape() {
        let mut out = Vec::new();
        collect_config(
            &Value::Array(vec![s("appendfsync"), s("always")]),
            "appendfsync",
            &mut out,
        )
        .unwrap();
        let cluster = Value::Map(vec![
            (
                s("127.0.0.1:7000"),
                Value::Array(vec![s("appendfsync"), s("everysec")]),
            ),
            (
                s("127.0.0.1:7001"),
                Value::Map(vec![(s("appendfsync"), s("always"))]),
            ),
        ]);
        collect_config(&cluster, "appendfsync", &mut out).unwrap();
        assert_eq!(out, ["always", "everysec", "always"]);
    }
}
