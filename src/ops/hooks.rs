//! Hooks and other shell commands of a profile (`sh -c`), each with a time limit.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a hook may run when the profile says nothing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `command` with `sh -c` and `env`; its output goes to this process's stderr (a
/// hook's chatter is not the run's output). Err says why it failed, in one line. On
/// timeout its whole process group is killed; when `stop` is set (SIGTERM), it is
/// asked to end (SIGTERM) and killed 10 s later.
pub fn run(
    command: &str,
    env: &[(String, String)],
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut child = c.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let status = wait_within(&mut child, timeout, Some(stop))?;
    if status.success() {
        return Ok(());
    }
    Err(match status.code() {
        Some(c) => format!("exited with {c}"),
        None => "was killed by a signal".into(),
    })
}

/// Runs `command`, feeding `input` to its standard input (a mail command).
pub fn run_with_input(command: &str, input: &[u8], timeout: Duration) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(std::io::stderr())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    // Written from a thread, so a command that never reads cannot hold us past the limit.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let result = wait_within(&mut child, timeout, None).and_then(|status| {
        if status.success() {
            Ok(())
        } else {
            Err(format!("exited with {status}"))
        }
    });
    let _ = writer.join();
    result
}

/// Reads a secret: the first line of a file, or of a command's output.
pub fn read_secret(
    file: Option<&std::path::Path>,
    command: Option<&str>,
) -> Result<String, String> {
    let text = match (file, command) {
        (Some(f), _) => {
            std::fs::read_to_string(f).map_err(|e| format!("reading {}: {e}", f.display()))?
        }
        (None, Some(c)) => {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c").arg(c);
            let out = output_within(cmd, SECRET_TIMEOUT).map_err(|e| format!("{c:?} {e}"))?;
            String::from_utf8(out).map_err(|_| format!("{c:?} printed no text"))?
        }
        (None, None) => return Err("no file or command".into()),
    };
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// How long a password or secret command may take.
const SECRET_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` (its own process group, stdin closed, stderr shown) and returns its
/// standard output; Err when it fails or outlives `timeout` (then it is killed).
pub fn output_within(mut cmd: Command, timeout: Duration) -> Result<Vec<u8>, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut out = child.stdout.take().expect("piped");
    // Read beside the wait, so a large output cannot fill the pipe and stall both.
    let (tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut buf);
        let _ = tx.send(buf);
    });
    let status = wait_within(&mut child, timeout, None)?;
    // A child that outlives it may hold the output open: wait only a little for the end.
    let buf = match done.recv_timeout(Duration::from_secs(5)) {
        Ok(buf) => buf,
        Err(_) => {
            kill_group(child.id());
            return Err("left a process holding its output open".into());
        }
    };
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    Ok(buf)
}

/// Waits for `child` (the leader of its own process group) at most `timeout`, then
/// kills the group. When `stop` is set (SIGTERM to cairn) the group is asked to end
/// (SIGTERM) and killed 10 s later; its end is then an error.
fn wait_within(
    child: &mut std::process::Child,
    timeout: Duration,
    stop: Option<&AtomicBool>,
) -> Result<std::process::ExitStatus, String> {
    let mut deadline = Instant::now() + timeout;
    let mut stopping = false;
    loop {
        if !stopping && stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            stopping = true;
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGTERM) };
            deadline = deadline.min(Instant::now() + Duration::from_secs(10));
        }
        match child.try_wait() {
            Ok(Some(_)) if stopping => return Err("was stopped by a signal".into()),
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.wait();
                return Err(if stopping {
                    "was stopped by a signal".into()
                } else {
                    format!(
                        "did not finish within {}s and was killed",
                        timeout.as_secs()
                    )
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    }
}

fn kill_group(pid: u32) {
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}
