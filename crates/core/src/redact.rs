//! Redaction of secrets in text meant for people: [`url`] for a URL (store, model, callback,
//! file URLs), [`command`] for a command's argv, [`text`] for free text (error chains) that
//! may quote URLs. Everything Augur prints, logs or formats with `Debug` that can hold a
//! credential goes through one of these, so every form is masked the same way.
//!
//! What counts as secret, failing safe:
//! - a URL's password, and its user name when there is no password (`redis://secret@host`,
//!   `https://token@host`), except for PostgreSQL, whose user is a role name;
//! - every query value except the options Augur itself defines, which hold no secrets
//!   (`?password=...`, `?X-Amz-Signature=...`, `?sig=...` are all masked), and the fragment;
//! - in an argv, the value of every `NAME=value` environment assignment (`/usr/bin/env
//!   API_KEY=...`) except a few well-known harmless names, of `--name=value` and the
//!   argument after `--name` when the name says secret (`token`, `password`, `key`, ...), and
//!   URLs, as above.

/// What replaces a secret.
pub const MASK: &str = "***";

/// Query options that Augur's own store URLs define and that never hold a secret; every other
/// query value is masked.
const PLAIN_QUERY_KEYS: &[&str] = &[
    "schema",
    "pool_size",
    "connect_timeout",
    "pool_timeout",
    "application_name",
    "sslmode",
    "prefix",
    "timeout_ms",
    "sync",
    "db",
    "namespace",
    "timeout",
    "pool",
];

/// Environment variables whose values are shown in a command's argv.
const PLAIN_ENV_NAMES: &[&str] = &[
    "PATH",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
];

/// Parts of a name that mark its value as secret.
const SECRET_WORDS: &[&str] = &[
    "pass", "pwd", "secret", "token", "key", "auth", "cred", "sig", "cookie", "session", "private",
];

/// True if a parameter or flag named `name` holds a secret (`--api-key`, `password`, `sig`).
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| lower.contains(word))
}

/// `url` with its secrets masked (see the module docs): `redis+cluster://:pw@a:1,b:2` →
/// `redis+cluster://:***@a:1,b:2`, `postgres://u@h/db?password=pw` →
/// `postgres://u@h/db?password=***`. Text without `://` is returned as it is.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((head, fragment)) => (head, Some(fragment)),
        None => (rest, None),
    };
    let (main, query) = match before_fragment.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    out.push_str("://");
    match userinfo_end(main) {
        Some(at) => {
            let (userinfo, tail) = (&main[..at], &main[at..]);
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None if is_postgres(scheme) => out.push_str(userinfo),
                None => out.push_str(MASK),
            }
            out.push_str(tail);
        }
        None => out.push_str(main),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if !PLAIN_QUERY_KEYS.contains(&key) => {
                    out.push_str(key);
                    out.push('=');
                    out.push_str(MASK);
                }
                _ => out.push_str(pair),
            }
        }
    }
    if fragment.is_some_and(|f| !f.is_empty()) {
        out.push('#');
        out.push_str(MASK);
    }
    out
}

fn is_postgres(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
}

/// Where the user information of `main` (a URL after `://`, without query and fragment)
/// ends: the index of its last `@` in the authority. A password may hold a raw `/` (which
/// ends the authority for a parser): when what comes before the first `/` is not a plain
/// `host[:port]` list, every `@` up to the query counts.
fn userinfo_end(main: &str) -> Option<usize> {
    let authority_end = main.find('/').unwrap_or(main.len());
    if let Some(at) = main[..authority_end].rfind('@') {
        return Some(at);
    }
    let at = main.rfind('@')?;
    let plain_hosts = main[..authority_end].split(',').all(|host| {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) if !host.ends_with(']') => (name, Some(port)),
            _ => (host, None),
        };
        !name.is_empty() && port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()))
    });
    (!plain_hosts).then_some(at)
}

/// A command's argv with its secrets masked (see the module docs).
pub fn command(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut mask_next = false;
    for arg in argv {
        if std::mem::take(&mut mask_next) {
            out.push(MASK.to_owned());
            continue;
        }
        let shown = match arg.split_once('=') {
            Some((name, value)) => {
                let flag = name.trim_start_matches('-');
                let env_assignment = !name.starts_with('-')
                    && name.bytes().next().is_some_and(|b| !b.is_ascii_digit())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                let plain_env = PLAIN_ENV_NAMES.contains(&name);
                if (env_assignment && !plain_env) || is_secret_name(flag) {
                    format!("{name}={MASK}")
                } else {
                    format!("{name}={}", self::url(value))
                }
            }
            None => {
                mask_next = arg.starts_with('-') && arg.len() > 1 && is_secret_name(arg);
                self::url(arg)
            }
        };
        out.push(shown);
    }
    out
}

/// Free text (an error chain, a log line) with every URL in it masked as [`url`] does. A URL
/// runs from its scheme to the next white space or quote.
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let scheme_start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
            .map_or(0, |j| j + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || "\"'`<>".contains(c))
            .map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..scheme_start]);
        if scheme_start == i {
            out.push_str(&rest[i..end]);
        } else {
            out.push_str(&url(&rest[scheme_start..end]));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_secret_bearing_url_form_is_masked() {
        for (given, shown) in [
            ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
            (
                "redis://user:pw@host:6379/0",
                "redis://user:***@host:6379/0",
            ),
            ("redis://pw@host:6379", "redis://***@host:6379"),
            (
                "redis+cluster://:pw@h1:7000,h2:7001,h3:7002",
                "redis+cluster://:***@h1:7000,h2:7001,h3:7002",
            ),
            (
                "redis+cluster://u:pw@h1:7000,u:pw@h2:7001",
                "redis+cluster://u:***@h2:7001",
            ),
            ("redis://:p/w@host:6379", "redis://:***@host:6379"),
            (
                "postgres://augur:pw@127.0.0.1:5432/augur",
                "postgres://augur:***@127.0.0.1:5432/augur",
            ),
            (
                "postgres://augur@127.0.0.1/augur?password=pw&schema=t1",
                "postgres://augur@127.0.0.1/augur?password=***&schema=t1",
            ),
            (
                "postgresql://augur@h/db?sslpassword=pw",
                "postgresql://augur@h/db?sslpassword=***",
            ),
            (
                "http://user:pw@127.0.0.1:5055",
                "http://user:***@127.0.0.1:5055",
            ),
            ("https://r8_token@api.test/v1", "https://***@api.test/v1"),
            (
                "s3://bucket/prefix?access_key_id=AK&secret_access_key=SK",
                "s3://bucket/prefix?access_key_id=***&secret_access_key=***",
            ),
            (
                "https://x.test/a.png?X-Amz-Signature=s&X-Amz-Credential=c#t",
                "https://x.test/a.png?X-Amz-Signature=***&X-Amz-Credential=***#***",
            ),
        ] {
            let masked = url(given);
            assert_eq!(masked, shown, "{given}");
            assert!(!masked.contains("pw") && !masked.contains("SK"), "{masked}");
        }
        // Nothing secret: unchanged.
        for plain in [
            "embedded://./augur-data?sync=full",
            "memory://",
            "redis://h:6379/0?prefix=a&timeout_ms=500",
            "postgres://augur@127.0.0.1:5432/augur?schema=t&pool_size=4",
            "https://api.replicate.com",
            "https://host:8080/users/@me",
            "./augur-data/files",
        ] {
            assert_eq!(url(plain), plain);
        }
    }

    #[test]
    fn command_arguments_are_masked() {
        assert_eq!(
            command(&argv(&[
                "/usr/bin/env",
                "API_KEY=abc",
                "HF_HUB=hf_x",
                "PATH=/usr/bin",
                "python3",
                "run.py",
                "--token",
                "t0k",
                "--api-key=k3y",
                "--steps=3",
                "--db=postgres://u:pw@h/db",
                "https://user:pw@h/x",
            ])),
            argv(&[
                "/usr/bin/env",
                "API_KEY=***",
                "HF_HUB=***",
                "PATH=/usr/bin",
                "python3",
                "run.py",
                "--token",
                "***",
                "--api-key=***",
                "--steps=3",
                "--db=postgres://u:***@h/db",
                "https://user:***@h/x",
            ])
        );
    }

    #[test]
    fn urls_in_text_are_masked() {
        assert_eq!(
            text(
                "cannot open the store \"redis+cluster://:pw@a:1,b:2\": refused (postgres://u:pw@h/d)"
            ),
            "cannot open the store \"redis+cluster://:***@a:1,b:2\": refused (postgres://u:***@h/d)"
        );
        assert_eq!(text("no url here: a://"), "no url here: a://");
        assert_eq!(text("://x"), "://x");
    }
}
