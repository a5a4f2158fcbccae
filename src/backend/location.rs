//! Repository URLs (CLI.md): which storage a URL names, and the settings handed to the
//! OpenDAL service for it, from the URL, the repeatable `-o KEY=VALUE` and each
//! service's usual environment variables (in that order of precedence).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Where a repository lives.
#[derive(Debug)]
pub enum Target {
    /// A local folder, served by cairn's own backend (fsync'd atomic writes, open
    /// pack handles kept for ranged reads).
    Local(PathBuf),
    Remote(Remote),
}

/// A service OpenDAL speaks, with its settings.
#[derive(Debug)]
pub struct Remote {
    /// OpenDAL's scheme name (`s3`, `sftp`, `webdav`, …).
    pub scheme: String,
    /// Settings for the service builder. May hold credentials: never printed.
    pub config: BTreeMap<String, String>,
    /// The URL as a person may see it: no credentials, ever.
    pub display: String,
    pub tuning: Tuning,
}

/// cairn's own `-o` options, not passed to the service.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    /// Requests in flight at once (`-o connections=N`).
    pub connections: usize,
    /// Limit for one request (`-o timeout=30s`); a timed-out request is retried.
    pub timeout: Duration,
    /// Tries after the first for a transient failure (`-o retries=N`).
    pub retries: usize,
    /// Large files go up in parts where the service can (`-o multipart=off` for a
    /// store that lacks the multipart API: each file is then one upload).
    pub multipart: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            connections: 8,
            timeout: Duration::from_secs(60),
            retries: 6,
            multipart: true,
        }
    }
}

/// The environment variables each service reads, as (setting, variables tried in order).
fn env_settings(scheme: &str) -> &'static [(&'static str, &'static [&'static str])] {
    match scheme {
        "s3" => &[
            ("access_key_id", &["AWS_ACCESS_KEY_ID"]),
            ("secret_access_key", &["AWS_SECRET_ACCESS_KEY"]),
            ("session_token", &["AWS_SESSION_TOKEN"]),
            ("region", &["AWS_REGION", "AWS_DEFAULT_REGION"]),
            ("endpoint", &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]),
        ],
        "gcs" => &[
            ("credential_path", &["GOOGLE_APPLICATION_CREDENTIALS"]),
            ("token", &["GOOGLE_ACCESS_TOKEN"]),
        ],
        "azblob" => &[
            (
                "account_name",
                &["AZURE_STORAGE_ACCOUNT", "AZURE_ACCOUNT_NAME"],
            ),
            ("account_key", &["AZURE_STORAGE_KEY", "AZURE_ACCOUNT_KEY"]),
            ("sas_token", &["AZURE_STORAGE_SAS_TOKEN"]),
            ("endpoint", &["AZURE_ENDPOINT"]),
        ],
        "b2" => &[
            (
                "application_key_id",
                &["B2_APPLICATION_KEY_ID", "B2_ACCOUNT_ID"],
            ),
            ("application_key", &["B2_APPLICATION_KEY", "B2_ACCOUNT_KEY"]),
            ("bucket_id", &["B2_BUCKET_ID"]),
        ],
        "webdav" => &[
            ("username", &["WEBDAV_USERNAME"]),
            ("password", &["WEBDAV_PASSWORD"]),
            ("token", &["WEBDAV_TOKEN"]),
        ],
        "gdrive" => &[
            ("access_token", &["GDRIVE_ACCESS_TOKEN"]),
            ("refresh_token", &["GDRIVE_REFRESH_TOKEN"]),
            ("client_id", &["GDRIVE_CLIENT_ID"]),
            ("client_secret", &["GDRIVE_CLIENT_SECRET"]),
        ],
        "dropbox" => &[
            ("access_token", &["DROPBOX_ACCESS_TOKEN"]),
            ("refresh_token", &["DROPBOX_REFRESH_TOKEN"]),
            ("client_id", &["DROPBOX_CLIENT_ID"]),
            ("client_secret", &["DROPBOX_CLIENT_SECRET"]),
        ],
        "ftp" => &[("user", &["FTP_USER"]), ("password", &["FTP_PASSWORD"])],
        _ => &[],
    }
}

/// A repository URL as it may be shown or recorded: a password in it
/// (`webdav:https://user:PASSWORD@host/`) becomes `***`.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_string(),
    }
}

/// True when a URL carries a password (`scheme://user:PASSWORD@host`).
pub fn url_has_password(url: &str) -> bool {
    shown_url(url) != url
}

/// True for a setting whose value must never be shown.
pub fn is_secret_setting(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "password", "token", "key", "credential", "sas"]
        .iter()
        .any(|s| k.contains(s))
}

/// Parses a repository URL with its `-o KEY=VALUE` options.
pub fn parse(
    url: &str,
    options: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Target> {
    let mut opts = BTreeMap::new();
    for o in options {
        let (k, v) = o
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Error::Usage(format!("-o {o:?}: expected KEY=VALUE")))?;
        opts.insert(k.trim().to_string(), v.to_string());
    }
    let tuning = take_tuning(&mut opts)?;

    let (scheme, mut config, display) = if let Some(p) = url.strip_prefix("fs:") {
        refuse_options(&opts, url)?;
        return Ok(Target::Local(PathBuf::from(p)));
    } else if url.starts_with('/') || url.starts_with('.') || !url.contains(':') {
        refuse_options(&opts, url)?;
        return Ok(Target::Local(PathBuf::from(url)));
    } else if let Some(rest) = url.strip_prefix("s3:") {
        s3(rest)?
    } else if let Some(rest) = url.strip_prefix("gs:") {
        bucket_url("gcs", "gs", rest)?
    } else if let Some(rest) = url.strip_prefix("azure:") {
        bucket_url("azblob", "azure", rest)?
    } else if let Some(rest) = url.strip_prefix("b2:") {
        bucket_url("b2", "b2", rest)?
    } else if let Some(rest) = url.strip_prefix("sftp:") {
        sftp(rest)?
    } else if let Some(rest) = url.strip_prefix("webdav:") {
        webdav(rest)?
    } else if let Some(rest) = url.strip_prefix("opendal:") {
        let scheme = rest.trim();
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Usage(format!(
                "{url:?}: expected opendal:SCHEME (e.g. opendal:gdrive) with settings as -o KEY=VALUE"
            )));
        }
        let shown = match opts.get("root") {
            Some(r) => format!("opendal:{scheme} (root {r})"),
            None => format!("opendal:{scheme}"),
        };
        (scheme.to_string(), BTreeMap::new(), shown)
    } else {
        let scheme = url.split(':').next().unwrap_or(url);
        return Err(Error::Usage(format!(
            "repository URL scheme {scheme:?} is not known; use a path, s3:, gs:, azure:, b2:, sftp:, webdav: or opendal:SCHEME (README: Storage)"
        )));
    };
    // -o overrides what the URL says; the environment fills in what neither says.
    config.extend(opts);
    for (setting, vars) in env_settings(&scheme) {
        if !config.contains_key(*setting) {
            if let Some(v) = vars.iter().find_map(|v| env(v).filter(|v| !v.is_empty())) {
                config.insert(setting.to_string(), v);
            }
        }
    }
    if scheme == "s3" {
        // restic's default; S3 signs requests with the region, so one is needed.
        config
            .entry("region".into())
            .or_insert_with(|| "us-east-1".into());
        if config.contains_key("access_key_id") {
            // Credentials are given: do not wait on an EC2 metadata service that is
            // not there.
            config
                .entry("disable_ec2_metadata".into())
                .or_insert_with(|| "true".into());
        }
    }
    Ok(Target::Remote(Remote {
        scheme,
        config,
        display,
        tuning,
    }))
}

fn refuse_options(opts: &BTreeMap<String, String>, url: &str) -> Result<()> {
    match opts.keys().next() {
        Some(k) => Err(Error::Usage(format!(
            "-o {k}=…: a local repository ({url}) takes no backend options"
        ))),
        None => Ok(()),
    }
}

fn take_tuning(opts: &mut BTreeMap<String, String>) -> Result<Tuning> {
    let mut t = Tuning::default();
    if let Some(v) = opts.remove("connections") {
        t.connections = v
            .parse()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .ok_or_else(|| Error::Usage(format!("-o connections={v}: expected 1 to 256")))?;
    }
    if let Some(v) = opts.remove("retries") {
        t.retries = v
            .parse()
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| Error::Usage(format!("-o retries={v}: expected 0 to 100")))?;
    }
    if let Some(v) = opts.remove("timeout") {
        t.timeout = parse_seconds(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
            Error::Usage(format!(
                "-o timeout={v}: expected a duration like 30s or 2m"
            ))
        })?;
    }
    if let Some(v) = opts.remove("multipart") {
        t.multipart = match v.as_str() {
            "on" | "true" => true,
            "off" | "false" => false,
            _ => {
                return Err(Error::Usage(format!(
                    "-o multipart={v}: expected on or off"
                )))
            }
        };
    }
    Ok(t)
}

/// `90`, `90s`, `2m`, `1h`.
fn parse_seconds(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&v[..i], &v[i..]),
        None => (v, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(mult)?))
}

type Parsed = (String, BTreeMap<String, String>, String);

fn root_of(prefix: &str) -> String {
    format!("/{}", prefix.trim_matches('/'))
}

/// `s3:BUCKET[/PREFIX]` or `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`.
fn s3(rest: &str) -> Result<Parsed> {
    let mut config = BTreeMap::new();
    let path = if let Some((proto, after)) = rest
        .strip_prefix("https://")
        .map(|a| ("https", a))
        .or_else(|| rest.strip_prefix("http://").map(|a| ("http", a)))
    {
        let (host, path) = after.split_once('/').unwrap_or((after, ""));
        config.insert("endpoint".into(), format!("{proto}://{host}"));
        path
    } else {
        rest
    };
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(Error::Usage(format!(
            "s3:{rest}: expected s3:BUCKET/PREFIX or s3:https://HOST/BUCKET/PREFIX"
        )));
    }
    config.insert("bucket".into(), bucket.into());
    config.insert("root".into(), root_of(prefix));
    Ok(("s3".into(), config, format!("s3:{rest}")))
}

/// `gs:`, `azure:`, `b2:` as restic writes them: `BUCKET[/PREFIX]`.
fn bucket_url(scheme: &str, shown: &str, rest: &str) -> Result<Parsed> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::Usage(format!(
            "{shown}:{rest}: expected {shown}:BUCKET/PREFIX"
        )));
    }
    let key = if scheme == "azblob" {
        "container"
    } else {
        "bucket"
    };
    let mut config = BTreeMap::new();
    config.insert(key.into(), bucket.into());
    config.insert("root".into(), root_of(prefix));
    Ok((scheme.into(), config, format!("{shown}:{rest}")))
}

/// `sftp:[USER@]HOST:/abs/path` or `sftp://[USER@]HOST[:PORT]/abs/path`.
fn sftp(rest: &str) -> Result<Parsed> {
    let bad = || {
        Error::Usage(format!(
            "sftp:{rest}: expected sftp:USER@HOST:/absolute/path or sftp://USER@HOST:PORT/absolute/path"
        ))
    };
    let (userhost, port, path) = if let Some(after) = rest.strip_prefix("//") {
        let (authority, path) = after.split_once('/').ok_or_else(bad)?;
        let (userhost, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h, Some(p.parse::<u16>().map_err(|_| bad())?))
            }
            _ => (authority, None),
        };
        (userhost, port, format!("/{path}"))
    } else {
        let (userhost, path) = rest.split_once(':').ok_or_else(bad)?;
        (userhost, None, path.to_string())
    };
    let (user, host) = match userhost.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, userhost),
    };
    if host.is_empty() || !path.starts_with('/') || user.is_some_and(|u| u.is_empty()) {
        return Err(bad());
    }
    let mut config = BTreeMap::new();
    let endpoint = match port {
        Some(p) => format!("ssh://{host}:{p}"),
        None => format!("ssh://{host}"),
    };
    config.insert("endpoint".into(), endpoint);
    if let Some(u) = user {
        config.insert("user".into(), u.into());
    }
    let root = path.trim_end_matches('/');
    config.insert(
        "root".into(),
        if root.is_empty() { "/" } else { root }.into(),
    );
    let shown = match (user, port) {
        (Some(u), Some(p)) => format!("sftp://{u}@{host}:{p}{path}"),
        (None, Some(p)) => format!("sftp://{host}:{p}{path}"),
        (Some(u), None) => format!("sftp:{u}@{host}:{path}"),
        (None, None) => format!("sftp:{host}:{path}"),
    };
    Ok(("sftp".into(), config, shown))
}

/// `webdav:http(s)://[USER[:PASSWORD]@]HOST[:PORT]/PATH`.
fn webdav(rest: &str) -> Result<Parsed> {
    let (proto, after) = rest
        .split_once("://")
        .filter(|(p, _)| *p == "http" || *p == "https")
        .ok_or_else(|| {
            Error::Usage(format!(
                "webdav:{rest}: expected webdav:http(s)://HOST[:PORT]/PATH"
            ))
        })?;
    let (authority, path) = after.split_once('/').unwrap_or((after, ""));
    let mut config = BTreeMap::new();
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            config.insert("username".into(), user.into());
            if !pass.is_empty() {
                config.insert("password".into(), pass.into());
            }
            host
        }
        None => authority,
    };
    if host.is_empty() {
        return Err(Error::Usage(format!("webdav:{rest}: no host")));
    }
    config.insert("endpoint".into(), format!("{proto}://{host}"));
    config.insert("root".into(), root_of(path));
    let shown = format!("webdav:{proto}://{host}/{}", path.trim_matches('/'));
    Ok(("webdav".into(), config, shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(url: &str, opts: &[&str], env: &[(&str, &str)]) -> Remote {
        let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match parse(url, &opts, &lookup).unwrap() {
            Target::Remote(r) => r,
            Target::Local(p) => panic!("{url} parsed as local {p:?}"),
        }
    }

    fn get<'a>(r: &'a Remote, k: &str) -> &'a str {
        r.config.get(k).map(|s| s.as_str()).unwrap_or("")
    }

    #[test]
    fn local_paths() {
        for (url, path) in [
            ("/srv/repo", "/srv/repo"),
            ("./r", "./r"),
            ("fs:/x", "/x"),
            ("repo", "repo"),
        ] {
            match parse(url, &[], &|_| None).unwrap() {
                Target::Local(p) => assert_eq!(p, PathBuf::from(path)),
                Target::Remote(r) => panic!("{url} parsed as {r:?}"),
            }
        }
        assert!(parse("/srv/repo", &["region=x".into()], &|_| None).is_err());
    }

    #[test]
    fn s3_forms_and_environment() {
        let r = remote(
            "s3:bkt/some/prefix",
            &["endpoint=http://127.0.0.1:9000"],
            &[
                ("AWS_ACCESS_KEY_ID", "AK"),
                ("AWS_SECRET_ACCESS_KEY", "SK"),
                ("AWS_ENDPOINT_URL", "http://other"),
            ],
        );
        assert_eq!(
            (r.scheme.as_str(), get(&r, "bucket"), get(&r, "root")),
            ("s3", "bkt", "/some/prefix")
        );
        assert_eq!(
            get(&r, "endpoint"),
            "http://127.0.0.1:9000",
            "-o wins over the environment"
        );
        assert_eq!(
            (get(&r, "access_key_id"), get(&r, "secret_access_key")),
            ("AK", "SK")
        );
        assert_eq!(get(&r, "region"), "us-east-1");
        assert_eq!(r.display, "s3:bkt/some/prefix");

        let r = remote(
            "s3:https://s3.example.com:9443/bkt",
            &["region=eu-west-1"],
            &[],
        );
        assert_eq!(get(&r, "endpoint"), "https://s3.example.com:9443");
        assert_eq!(
            (get(&r, "bucket"), get(&r, "root"), get(&r, "region")),
            ("bkt", "/", "eu-west-1")
        );
        assert!(parse("s3:", &[], &|_| None).is_err());
    }

    #[test]
    fn sftp_forms() {
        let r = remote("sftp:alice@host.example:/srv/backup", &[], &[]);
        assert_eq!(
            (get(&r, "endpoint"), get(&r, "user"), get(&r, "root")),
            ("ssh://host.example", "alice", "/srv/backup")
        );
        let r = remote("sftp://bob@127.0.0.1:2222/srv/b/", &[], &[]);
        assert_eq!(
            (get(&r, "endpoint"), get(&r, "user"), get(&r, "root")),
            ("ssh://127.0.0.1:2222", "bob", "/srv/b")
        );
        assert_eq!(r.display, "sftp://bob@127.0.0.1:2222/srv/b/");
        for bad in [
            "sftp:host:relative",
            "sftp://host:notaport/x",
            "sftp:@h:/x",
            "sftp:nohostpath",
        ] {
            assert!(parse(bad, &[], &|_| None).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn webdav_credentials_never_shown() {
        let r = remote("webdav:https://u:hunter2@dav.example/backups/x", &[], &[]);
        assert_eq!(
            (get(&r, "endpoint"), get(&r, "root")),
            ("https://dav.example", "/backups/x")
        );
        assert_eq!((get(&r, "username"), get(&r, "password")), ("u", "hunter2"));
        assert!(
            !r.display.contains("hunter2") && !r.display.contains("u@"),
            "{}",
            r.display
        );
    }

    #[test]
    fn tuning_options_are_cairns() {
        let r = remote(
            "opendal:memory",
            &[
                "connections=3",
                "timeout=2m",
                "retries=0",
                "multipart=off",
                "root=/r",
            ],
            &[],
        );
        assert_eq!(
            r.tuning,
            Tuning {
                connections: 3,
                timeout: Duration::from_secs(120),
                retries: 0,
                multipart: false,
            }
        );
        assert!(!r.config.contains_key("connections"));
        assert_eq!(get(&r, "root"), "/r");
        for bad in [
            "connections=0",
            "timeout=0",
            "timeout=x",
            "retries=-1",
            "multipart=yes please",
            "noequals",
        ] {
            assert!(
                parse("opendal:memory", &[bad.into()], &|_| None).is_err(),
                "{bad}"
            );
        }
        assert!(parse("opendal:", &[], &|_| None).is_err());
        assert!(parse("nosuch:x", &[], &|_| None).is_err());
    }
}
