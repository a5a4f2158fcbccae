//! Notifications: a webhook (JSON POST, retried with backoff), a sendmail-compatible
//! mail command, and healthchecks.io-style pings (URL/start, URL, URL/fail).

use std::time::Duration;

use serde::Serialize;

/// What a notification says (the webhook's JSON body; docs/config.md shows one).
#[derive(Debug, Clone, Serialize)]
pub struct Payload {
    /// "failure", "success" or "overdue".
    pub event: String,
    pub profile: String,
    pub host: String,
    pub repository: String,
    pub started: String,
    pub ended: String,
    pub duration_seconds: f64,
    pub exit_code: i32,
    /// The step that failed: before-hook, backup, forget, prune, check, copy:NAME, ….
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub snapshot: Option<String>,
    pub files: Option<u64>,
    pub bytes_added: Option<u64>,
    pub warnings: Vec<String>,
    /// Where to look further.
    pub hint: String,
}

impl Payload {
    pub fn subject(&self) -> String {
        match self.event.as_str() {
            "success" => format!("cairn: {} on {} succeeded", self.profile, self.host),
            "overdue" => format!("cairn: {} on {} is overdue", self.profile, self.host),
            _ => format!(
                "cairn: {} on {} FAILED{}",
                self.profile,
                self.host,
                self.failed_step
                    .as_deref()
                    .map(|s| format!(" at {s}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// The plain-text message (mail body, ping body).
    pub fn text(&self) -> String {
        let mut t = format!(
            "{}\n\nprofile:    {}\nhost:       {}\nrepository: {}\nstarted:    {}\nended:      {}\nexit code:  {}\n",
            self.subject(),
            self.profile,
            self.host,
            self.repository,
            self.started,
            self.ended,
            self.exit_code
        );
        if let Some(e) = &self.error {
            t += &format!("error:      {e}\n");
        }
        if let Some(s) = &self.snapshot {
            t += &format!("snapshot:   {s}\n");
        }
        if let Some(b) = self.bytes_added {
            t += &format!("added:      {b} bytes\n");
        }
        for w in &self.warnings {
            t += &format!("warning:    {w}\n");
        }
        t += &format!("\nTo look further: {}\n", self.hint);
        t
    }
}

/// Pauses between webhook tries (the first try is at once).
pub const WEBHOOK_BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(9),
];
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// POSTs the payload as JSON; a refused connection, a timeout, 429 or a 5xx answer is
/// tried again after each pause of `WEBHOOK_BACKOFF` (with up to 25% jitter). Err says
/// why it finally failed; the URL (which often holds a token) is never in it.
pub fn webhook(url: &str, payload: &Payload) -> Result<(), String> {
    let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 0..=WEBHOOK_BACKOFF.len() {
        if attempt > 0 {
            std::thread::sleep(jittered(WEBHOOK_BACKOFF[attempt - 1]));
        }
        match crate::backend::http_post(url, "application/json", body.clone(), HTTP_TIMEOUT) {
            Ok(code) if (200..300).contains(&code) => return Ok(()),
            Ok(code) if code == 429 || code >= 500 => last = format!("answered {code}"),
            Ok(code) => return Err(format!("webhook answered {code}")),
            Err(e) => last = e,
        }
    }
    Err(format!(
        "webhook failed after {} tries: {last}",
        WEBHOOK_BACKOFF.len() + 1
    ))
}

/// Pipes the message, with Subject (and To) headers, into a sendmail-compatible command.
pub fn mail(command: &str, to: Option<&str>, payload: &Payload) -> Result<(), String> {
    let mut msg = String::new();
    if let Some(to) = to {
        msg += &format!("To: {to}\n");
    }
    msg += &format!("Subject: {}\n\n{}", payload.subject(), payload.text());
    super::hooks::run_with_input(command, msg.as_bytes(), Duration::from_secs(60))
        .map_err(|e| format!("mail command {e}"))
}

/// Which ping: a run started, succeeded or failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ping {
    Start,
    Success,
    Fail,
}

/// healthchecks.io's convention: URL/start, URL, URL/fail (a body with the details).
pub fn ping(url: &str, kind: Ping, body: &str) -> Result<(), String> {
    let base = url.trim_end_matches('/');
    let target = match kind {
        Ping::Start => format!("{base}/start"),
        Ping::Success => base.to_string(),
        Ping::Fail => format!("{base}/fail"),
    };
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(jittered(WEBHOOK_BACKOFF[attempt - 1]));
        }
        match crate::backend::http_post(
            &target,
            "text/plain",
            body.as_bytes().to_vec(),
            HTTP_TIMEOUT,
        ) {
            Ok(code) if (200..300).contains(&code) => return Ok(()),
            Ok(code) => last = format!("answered {code}"),
            Err(e) => last = e,
        }
    }
    Err(format!("ping failed: {last}"))
}

fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::getrandom(&mut b);
    let r = u16::from_le_bytes(b) as f64 / u16::MAX as f64;
    d.mul_f64(1.0 + 0.25 * r)
}

/// Replaces every secret value in `text` with `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        t = t.replace(s.as_str(), "***");
    }
    t
}
