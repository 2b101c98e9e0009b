//! [`EmbeddedOptions`]: where the store lives and how hard it syncs, parsed from an
//! `embedded://<dir>?sync=full|normal` URL.

use std::fmt;
use std::path::{Path, PathBuf};

use augur_core::store;

use crate::error::Error;

/// The URL scheme of this backend.
pub const SCHEME: &str = "embedded://";

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "augur.db";

/// The lock file's name inside the data directory (held with an exclusive `flock`).
pub const LOCK_FILE: &str = "augur.lock";

/// How a commit reaches the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SyncMode {
    /// `synchronous=FULL`: the write-ahead log is fsynced before a commit is acknowledged, so an
    /// acknowledged write survives a process crash and a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the log is fsynced only at checkpoints. An acknowledged write
    /// survives a process crash; a power loss or OS crash may roll back the commits made since
    /// the last checkpoint (the database stays consistent).
    Normal,
}

impl SyncMode {
    /// The URL value (`full` or `normal`).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Normal => "normal",
        }
    }

    /// The value of SQLite's `synchronous` pragma.
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        }
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to open an [`EmbeddedStore`](crate::EmbeddedStore).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// The data directory; created if missing. The database is `<dir>/augur.db`.
    pub dir: PathBuf,
    /// How commits reach the disk (default [`SyncMode::Full`]).
    pub sync: SyncMode,
    /// The most write requests committed in one transaction (group commit); at least 1.
    pub max_batch: usize,
    /// The most reads running at once, each on its own read-only connection; at least 1.
    pub readers: usize,
}

impl EmbeddedOptions {
    /// Default options for a store in `dir`: durable (`sync=full`), batches of up to 256
    /// writes, 4 read connections.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sync: SyncMode::Full,
            max_batch: 256,
            readers: 4,
        }
    }

    /// The same options with another sync mode.
    pub fn with_sync(mut self, sync: SyncMode) -> Self {
        self.sync = sync;
        self
    }

    /// Parses `embedded://<dir>[?sync=full|normal]`.
    ///
    /// The directory may be absolute (`embedded:///var/lib/augur`) or relative to the working
    /// directory (`embedded://./augur-data`); `%XX` escapes are decoded. Unknown query keys and
    /// bad values are errors that name them.
    pub fn from_url(url: &str) -> Result<Self, store::Error> {
        Ok(parse_url(url)?)
    }

    /// The database file, `<dir>/augur.db`.
    pub fn database_path(&self) -> PathBuf {
        self.dir.join(DATABASE_FILE)
    }

    /// The lock file, `<dir>/augur.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The canonical URL of these options (`embedded://<dir>?sync=<mode>`).
impl fmt::Display for EmbeddedOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}?sync={}", self.dir.display(), self.sync)
    }
}

fn parse_url(url: &str) -> Result<EmbeddedOptions, Error> {
    let bad = |reason: String| Error::Config(format!("invalid store URL {url:?}: {reason}"));
    let Some(rest) = url.strip_prefix(SCHEME) else {
        return Err(bad(format!("it must start with {SCHEME}")));
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let path = augur_core::percent::decode(path).map_err(|reason| bad(reason.into()))?;
    if path.is_empty() {
        return Err(bad(
            "it names no directory (e.g. embedded://./augur-data)".into()
        ));
    }
    let mut options = EmbeddedOptions::new(path);
    let mut seen_sync = false;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sync" => {
                if seen_sync {
                    return Err(bad("the option `sync` is given twice".into()));
                }
                seen_sync = true;
                options.sync = match value {
                    "full" => SyncMode::Full,
                    "normal" => SyncMode::Normal,
                    other => {
                        return Err(bad(format!(
                            "invalid value {other:?} for `sync` (expected `full` or `normal`)"
                        )));
                    }
                };
            }
            other => {
                return Err(bad(format!(
                    "unknown option `{other}` (the only option is `sync`)"
                )));
            }
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directory_and_sync() {
        let o = EmbeddedOptions::from_url("embedded://./augur-data").unwrap();
        assert_eq!(o.dir, PathBuf::from("./augur-data"));
        assert_eq!(o.sync, SyncMode::Full);
        assert_eq!(o.database_path(), PathBuf::from("./augur-data/augur.db"));

        let o = EmbeddedOptions::from_url("embedded:///var/lib/augur?sync=normal").unwrap();
        assert_eq!(o.dir, PathBuf::from("/var/lib/augur"));
        assert_eq!(o.sync, SyncMode::Normal);
        assert_eq!(o.to_string(), "embedded:///var/lib/augur?sync=normal");

        let o = EmbeddedOptions::from_url("embedded://my%20data?sync=full").unwrap();
        assert_eq!(o.dir, PathBuf::from("my data"));
    }

    #[test]
    fn rejects_bad_urls_naming_the_problem() {
        for (url, needle) in [
            ("redis://x", "must start with embedded://"),
            ("embedded://", "names no directory"),
            ("embedded://d?sync=fast", "\"fast\" for `sync`"),
            ("embedded://d?cache=1", "unknown option `cache`"),
            ("embedded://d?sync=full&sync=normal", "given twice"),
            ("embedded://d%zz", "two hex digits"),
        ] {
            let err = EmbeddedOptions::from_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
