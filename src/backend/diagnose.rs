//! Storage errors as sentences a person can act on: bad credentials, a missing bucket,
//! a wrong region, an SSH host key that does not match, a refused connection, a name
//! that does not resolve, a server that stopped answering. No credential ever appears
//! in one: every message is scrubbed of the secret settings' values.

use std::io::ErrorKind as IoKind;
use std::process::Command;

use super::location::Tuning;
use crate::error::Error;

pub struct Diagnosis {
    pub display: String,
    pub scheme: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub secrets: Vec<String>,
    pub tuning: Tuning,
}

/// What the server or the transport said, without OpenDAL's request context (URIs,
/// headers): the error's message and the innermost cause.
pub fn brief(e: &opendal::Error) -> String {
    let mut innermost = None;
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        innermost = Some(s.to_string());
        cur = s.source();
    }
    match (e.message(), innermost) {
        ("", Some(i)) => i,
        (m, Some(i)) => format!("{m}: {i}"),
        (m, None) => m.to_string(),
    }
}

/// An error and every error under it, one message each.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    parts.join(": ")
}

impl Diagnosis {
    /// Replaces every secret value in `s`.
    pub fn scrub(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }

    pub fn error(&self, doing: &str, path: &str, e: &opendal::Error) -> Error {
        let raw = chain(e);
        let low = raw.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| low.contains(w));
        let endpoint = self.endpoint.as_deref().unwrap_or(&self.display);
        // OpenDAL marks an error that stayed after every retry as persistent.
        let retried = if (e.is_temporary() || e.is_persistent()) && self.tuning.retries > 0 {
            format!(" (gave up after {} retries)", self.tuning.retries)
        } else {
            String::new()
        };
        let (kind, what) = if has(&["nosuchbucket", "the specified bucket does not exist"]) {
            (
                IoKind::Other,
                "the bucket does not exist: create it first, or check its name".to_string(),
            )
        } else if e.kind() == opendal::ErrorKind::NotFound {
            (IoKind::NotFound, "not found".to_string())
        } else if has(&["invalidaccesskeyid", "notsignedup"]) {
            (
                IoKind::PermissionDenied,
                "the server does not know this access key: check AWS_ACCESS_KEY_ID or -o access_key_id".into(),
            )
        } else if has(&["signaturedoesnotmatch"]) {
            (
                IoKind::PermissionDenied,
                "the secret key does not match the access key: check AWS_SECRET_ACCESS_KEY or -o secret_access_key".into(),
            )
        } else if has(&[
            "authorizationheadermalformed",
            "permanentredirect",
            "illegallocationconstraint",
            "incorrectendpoint",
        ]) || (low.contains("region") && has(&["wrong", "expecting", "invalid"]))
        {
            (
                IoKind::Other,
                format!(
                    "wrong region: the bucket lives in another region than {}; set -o region=… (the server said: {})",
                    self.region.as_deref().unwrap_or("the one configured"),
                    short(&self.scrub(&brief(e)))
                ),
            )
        } else if self.scheme == "sftp"
            && has(&[
                "host key verification failed",
                "host key for",
                "remote host identification has changed",
            ])
        {
            (IoKind::PermissionDenied, self.host_key_problem())
        } else if e.kind() == opendal::ErrorKind::PermissionDenied
            || has(&[
                "accessdenied",
                "access denied",
                "permission denied",
                "401 unauthorized",
                "403 forbidden",
                "status: 401",
                "status: 403",
            ])
        {
            (
                IoKind::PermissionDenied,
                format!(
                    "access denied: check the credentials and what they may do (the server said: {})",
                    short(&self.scrub(&brief(e)))
                ),
            )
        } else if has(&["connection refused"]) {
            (
                IoKind::ConnectionRefused,
                format!("{endpoint} refused the connection: is the server running, and are host and port right?{retried}"),
            )
        } else if has(&[
            "dns error",
            "failed to lookup address",
            "name or service not known",
            "could not resolve hostname",
            "temporary failure in name resolution",
        ]) {
            (
                IoKind::Other,
                format!(
                    "cannot resolve the host name of {endpoint}: check the name (DNS){retried}"
                ),
            )
        } else if has(&["timeout", "timed out"]) {
            (
                IoKind::TimedOut,
                format!(
                    "no answer from {endpoint} within {}s per try, {} retries: the server or the network is down or too slow (-o timeout=… allows longer)",
                    self.tuning.timeout.as_secs(),
                    self.tuning.retries
                ),
            )
        } else {
            (
                IoKind::Other,
                format!("{}{retried}", short(&self.scrub(&raw))),
            )
        };
        Error::io(
            format!("{}: {doing} {path}", self.display),
            std::io::Error::new(kind, self.scrub(&what)),
        )
    }

    /// Which known_hosts file refused which key, from ssh itself: `ssh -G` tells the
    /// files it checks, `ssh-keyscan` the key the server shows now.
    fn host_key_problem(&self) -> String {
        let endpoint = self.endpoint.as_deref().unwrap_or("");
        let authority = endpoint.trim_start_matches("ssh://");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.to_string()),
            None => (authority.to_string(), "22".to_string()),
        };
        let files = Command::new("ssh")
            .args(["-G", "-p", &port, &host])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .and_then(|cfg| {
                cfg.lines()
                    .find_map(|l| l.strip_prefix("userknownhostsfile "))
                    .map(|s| s.to_string())
            })
            .unwrap_or_else(|| "~/.ssh/known_hosts".into());
        let fingerprints = Command::new("ssh-keyscan")
            .args(["-p", &port, &host])
            .output()
            .ok()
            .and_then(|o| {
                let keys = String::from_utf8_lossy(&o.stdout).to_string();
                let mut child = Command::new("ssh-keygen")
                    .args(["-l", "-f", "-"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .ok()?;
                use std::io::Write;
                child.stdin.take()?.write_all(keys.as_bytes()).ok()?;
                let out = child.wait_with_output().ok()?;
                let fps: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.len() >= 2).then(|| format!("{} {}", f.last().unwrap_or(&""), f[1]))
                    })
                    .collect();
                (!fps.is_empty()).then(|| fps.join(", "))
            })
            .unwrap_or_else(|| "unknown (ssh-keyscan got no key)".into());
        let name = if port == "22" {
            host.clone()
        } else {
            format!("[{host}]:{port}")
        };
        format!(
            "the SSH host key of {name} is not the one known: the server shows {fingerprints}, which {files} does not list for it. \
             If the server's key changed on purpose, remove the old entry with `ssh-keygen -R '{name}'` and connect once with ssh to accept the new one; otherwise someone may be in the middle"
        )
    }
}

/// The first line of a long server message, at most 300 characters.
fn short(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > 300 {
        format!("{}…", line.chars().take(300).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diagnosis() -> Diagnosis {
        Diagnosis {
            display: "s3:bkt/r".into(),
            scheme: "s3".into(),
            endpoint: Some("https://s3.example".into()),
            region: Some("us-east-1".into()),
            secrets: vec!["TopSecret123".into()],
            tuning: Tuning::default(),
        }
    }

    fn message(e: opendal::Error) -> String {
        diagnosis().error("reading", "config", &e).to_string()
    }

    /// A wrong region cannot be produced by the loopback servers (they accept any):
    /// the texts AWS answers with are mapped here.
    #[test]
    fn a_wrong_region_is_named() {
        for body in [
            "<Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message>",
            "<Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message>",
        ] {
            let e = opendal::Error::new(opendal::ErrorKind::Unexpected, body);
            let m = message(e);
            assert!(m.contains("wrong region") && m.contains("us-east-1"), "{m}");
        }
    }

    #[test]
    fn secrets_are_scrubbed_from_any_message() {
        let e = opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            "odd answer for key TopSecret123",
        );
        let m = message(e);
        assert!(!m.contains("TopSecret123") && m.contains("***"), "{m}");
    }
}
