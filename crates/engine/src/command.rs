//! The command provider: runs a local program once per prediction (argv, no shell).
//!
//! For each prediction the provider:
//!
//! 1. makes a fresh work directory (under the system's temporary directory, removed when the
//!    attempt ends however it ends) with an empty `outputs/` inside;
//! 2. starts the command in its own process group, in `working_dir` (default: the work
//!    directory), with the prediction's input as JSON on stdin (where an input value is an
//!    uploaded file's URL, `<public url>/v1/files/<id>`, the command gets instead the absolute
//!    path of a local copy of the file's bytes, named like the upload, in a temporary directory
//!    the worker removes when the attempt ends; data URIs and other URLs are left as they are)
//!    and, beside Augur's own
//!    environment without its `AUGUR_*` variables (they hold secrets), `AUGUR_WORK_DIR`,
//!    `AUGUR_OUTPUTS_DIR` (`$AUGUR_WORK_DIR/outputs`) and `AUGUR_PREDICTION_ID`; to give the
//!    command more variables, configure `["/usr/bin/env", "KEY=value", ...]` as its argv;
//! 3. streams each line the command writes to stderr into the prediction's logs as it comes
//!    (lines that arrive together are written together);
//! 4. when the command exits, kills what it left running in its process group, and:
//!    - on a non-zero exit (or a signal), fails with the status and the last stderr lines;
//!    - else parses stdout as the output JSON (empty or non-JSON stdout fails, quoting its
//!      first bytes), and replaces every string of the form `"file:outputs/NAME"` by the URL
//!      of `$AUGUR_OUTPUTS_DIR/NAME` stored in Augur's [`OutputFiles`]; a reference to a file
//!      that is missing or outside `outputs/` fails. Files in `outputs/` that the output does
//!      not name are discarded with the work directory. Output strings that are `http(s)`
//!      URLs are imported by the worker ([`OutputFiles::import_urls`]).
//!
//! A configured `timeout` kills the process group and fails with "timed out"; without one the
//! model's `max_run_time` applies (the worker drops the run). Cancel, shutdown and lost leases
//! drop the run future too, and dropping it kills the whole process group (`SIGKILL`), so
//! grandchildren the command started die with it.

use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use augur_core::{Event, Logs, PredictionId};

use crate::files::{OutputFiles, replace_strings, visit_strings};
use crate::provider::{Outcome, Progress, Provider, ProviderError, RunContext};

/// The prefix of output strings that name a file the command wrote under `outputs/`.
pub const FILE_REFERENCE_PREFIX: &str = "file:outputs/";

/// The most stdout (the output JSON) read from a command.
const MAX_STDOUT: usize = 16 << 20;

/// Longer stderr lines are cut here (the rest of the line is dropped).
const MAX_LOG_LINE: usize = 16 << 10;

/// Stderr lines read ahead of the logs being written.
const LOG_BACKLOG: usize = 1024;

/// Stderr lines quoted when a command fails.
const TAIL_LINES: usize = 20;

/// Settings of one command model. `Debug` masks secrets in the argv
/// ([`augur_core::redact::command`]).
#[derive(Clone, PartialEq, Eq)]
pub struct CommandOptions {
    /// The program and its arguments; the program is found on `PATH` unless it is a path.
    pub command: Vec<String>,
    /// Where the command runs; default: the prediction's work directory.
    pub working_dir: Option<PathBuf>,
    /// Kill the command and fail after this long; default: only the model's `max_run_time`.
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for CommandOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandOptions")
            .field("command", &augur_core::redact::command(&self.command))
            .field("working_dir", &self.working_dir)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl CommandOptions {
    /// Checks the settings without running anything: an argv with a program, a timeout of at
    /// least a millisecond, an existing `working_dir`, and a program that exists when it is
    /// given as an absolute path.
    pub fn validate(&self) -> Result<(), String> {
        let Some(program) = self.command.first() else {
            return Err(
                "command must name a program, e.g. [\"/usr/bin/python3\", \"tool.py\"]".into(),
            );
        };
        if program.is_empty() {
            return Err("command's program (its first element) is empty".into());
        }
        if self.timeout.is_some_and(|t| t < Duration::from_millis(1)) {
            return Err("timeout must be at least 1ms".into());
        }
        if let Some(dir) = &self.working_dir
            && !dir.is_dir()
        {
            return Err(format!("working_dir {} is not a directory", dir.display()));
        }
        let program = Path::new(program);
        if program.is_absolute() && !program.is_file() {
            return Err(format!("command {} does not exist", program.display()));
        }
        Ok(())
    }
}

/// Runs predictions by starting a local command (see the module docs).
#[derive(Debug)]
pub struct CommandProvider {
    options: CommandOptions,
}

impl CommandProvider {
    /// A provider running `options.command` (check it with [`CommandOptions::validate`]).
    pub fn new(options: CommandOptions) -> Self {
        Self { options }
    }
}

#[async_trait]
impl Provider for CommandProvider {
    async fn run(&self, ctx: RunContext) -> Result<Outcome, ProviderError> {
        let work = tempfile::Builder::new()
            .prefix("augur-command-")
            .tempdir()
            .map_err(|e| {
                ProviderError::Retryable(format!("cannot create a work directory: {e}"))
            })?;
        let run = self.run_in(&ctx, work.path());
        let result = match self.options.timeout {
            Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                Err(ProviderError::Failed(format!(
                    "command timed out after {}",
                    show_duration(limit)
                )))
            }),
            None => run.await,
        };
        // The run (and with it the process group) is gone by now; the work directory goes
        // next, off the async threads since it may be large. (A dropped run removes it in
        // place.)
        let _ = tokio::task::spawn_blocking(move || drop(work)).await;
        result
    }

    fn imports_output_urls(&self) -> bool {
        true
    }

    fn file_inputs(&self) -> crate::files::FileInputs {
        crate::files::FileInputs::LocalPath
    }
}

impl CommandProvider {
    async fn run_in(&self, ctx: &RunContext, work: &Path) -> Result<Outcome, ProviderError> {
        let outputs = work.join("outputs");
        tokio::fs::create_dir(&outputs).await.map_err(|e| {
            ProviderError::Retryable(format!("cannot create {}: {e}", outputs.display()))
        })?;
        let mut child = self.spawn(ctx, work, &outputs)?;
        // Killed when dropped: on timeout, cancel, shutdown, or an error below.
        let mut group = ProcessGroup::of(&child);
        let input = serde_json::to_vec(&ctx.prediction.input)
            .map_err(|e| ProviderError::Failed(format!("cannot encode the input: {e}")))?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        // Bounded, so a command that logs faster than the store takes it waits on its pipe.
        let (lines_tx, lines_rx) = mpsc::channel(LOG_BACKLOG);

        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A command that does not read its input closes the pipe early: not an error.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
            Ok::<_, ProviderError>(())
        };
        let read_stdout = async move {
            match stdout {
                Some(out) => read_capped(out, MAX_STDOUT).await,
                None => Ok(Vec::new()),
            }
        };
        let read_stderr = async move {
            let mut tail = VecDeque::with_capacity(TAIL_LINES);
            if let Some(err) = stderr {
                let mut reader = BufReader::new(err);
                while let Some(line) = next_line(&mut reader, MAX_LOG_LINE).await {
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.clone());
                    let _ = lines_tx.send(line).await;
                }
            }
            Ok::<_, ProviderError>(tail)
        };
        let forward_logs = forward_logs(&ctx.progress, lines_rx);
        let wait = async {
            let status = child
                .wait()
                .await
                .map_err(|e| ProviderError::Failed(format!("cannot wait for the command: {e}")))?;
            // Whatever it left running would hold its pipes open (and outlive the work
            // directory): the prediction's processes end with it.
            group.kill();
            Ok::<_, ProviderError>(status)
        };
        let ((), stdout, tail, (), status) =
            tokio::try_join!(feed, read_stdout, read_stderr, forward_logs, wait)?;

        if !status.success() {
            return Err(ProviderError::Failed(exit_message(status, &tail)));
        }
        let output = parse_output(&stdout)?;
        let output =
            store_referenced_files(&ctx.files, &ctx.prediction.id, &outputs, output).await?;
        Ok(Outcome::Succeeded(output))
    }

    fn spawn(
        &self,
        ctx: &RunContext,
        work: &Path,
        outputs: &Path,
    ) -> Result<tokio::process::Child, ProviderError> {
        let (program, args) =
            self.options.command.split_first().ok_or_else(|| {
                ProviderError::Failed("the model has no command configured".into())
            })?;
        let mut command = tokio::process::Command::new(program);
        // Augur's own settings hold secrets (the admin token, store credentials).
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("AUGUR_")) {
                command.env_remove(&key);
            }
        }
        command
            .args(args)
            .current_dir(self.options.working_dir.as_deref().unwrap_or(work))
            .env("AUGUR_WORK_DIR", work)
            .env("AUGUR_OUTPUTS_DIR", outputs)
            .env("AUGUR_PREDICTION_ID", ctx.prediction.id.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        command.spawn().map_err(|e| {
            ProviderError::Failed(format!("cannot start the command {program:?}: {e}"))
        })
    }
}

/// Writes stderr lines into the logs, each batch of lines that arrived meanwhile in one
/// report, until the stream ends.
async fn forward_logs(
    progress: &Progress,
    mut lines: mpsc::Receiver<String>,
) -> Result<(), ProviderError> {
    while let Some(first) = lines.recv().await {
        let mut batch = first;
        batch.push('\n');
        while let Ok(line) = lines.try_recv() {
            batch.push_str(&line);
            batch.push('\n');
        }
        progress
            .report(Event::processing().with_logs(Logs::Append(batch)))
            .await?;
    }
    Ok(())
}

/// The command's process group, killed (`SIGKILL`) at most once: on [`ProcessGroup::kill`]
/// or when dropped.
#[derive(Debug)]
struct ProcessGroup {
    /// The group id (the command's pid), until killed.
    id: Option<u32>,
}

impl ProcessGroup {
    fn of(child: &tokio::process::Child) -> Self {
        Self { id: child.id() }
    }

    fn kill(&mut self) {
        let Some(_id) = self.id.take() else { return };
        #[cfg(unix)]
        {
            use nix::sys::signal::{Signal, killpg};
            use nix::unistd::Pid;
            if let Ok(pgid) = i32::try_from(_id) {
                // ESRCH: nothing of the group is left.
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads all of `reader`, failing past `max` bytes.
async fn read_capped(reader: impl AsyncRead + Unpin, max: usize) -> Result<Vec<u8>, ProviderError> {
    let mut bytes = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ProviderError::Failed(format!("cannot read the command's stdout: {e}")))?;
    if bytes.len() > max {
        return Err(ProviderError::Failed(format!(
            "the command wrote more than {} MiB to stdout",
            max >> 20
        )));
    }
    Ok(bytes)
}

/// The next line (without its line ending, lossily decoded, cut at `max` bytes), or `None` at
/// the end of the stream (or on a read error, which ends it too).
async fn next_line(reader: &mut (impl AsyncBufRead + Unpin), max: usize) -> Option<String> {
    let mut line = Vec::new();
    let mut ended = false;
    loop {
        let available = match reader.fill_buf().await {
            Ok(bytes) => bytes,
            Err(_) => &[],
        };
        if available.is_empty() {
            ended = true;
            break;
        }
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            break;
        }
    }
    if ended && line.is_empty() {
        return None;
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// Why a command that exited unsuccessfully failed, with its last stderr lines.
fn exit_message(status: ExitStatus, tail: &VecDeque<String>) -> String {
    let how = match status.code() {
        Some(code) => format!("the command exited with status {code}"),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                match status.signal() {
                    Some(signal) => format!("the command was killed by signal {signal}"),
                    None => format!("the command failed ({status})"),
                }
            }
            #[cfg(not(unix))]
            format!("the command failed ({status})")
        }
    };
    if tail.is_empty() {
        format!("{how} (it wrote nothing to stderr)")
    } else {
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!("{how}; the last lines of its stderr:\n{}", lines.join("\n"))
    }
}

/// Parses stdout as the output JSON.
fn parse_output(stdout: &[u8]) -> Result<Value, ProviderError> {
    if stdout.trim_ascii().is_empty() {
        return Err(ProviderError::Failed(
            "the command wrote nothing to stdout; it must print the output as JSON (null for none)"
                .into(),
        ));
    }
    serde_json::from_slice(stdout).map_err(|e| {
        let start = String::from_utf8_lossy(&stdout[..stdout.len().min(100)]).into_owned();
        let more = if stdout.len() > 100 { "…" } else { "" };
        ProviderError::Failed(format!(
            "the command's stdout is not JSON ({e}); it begins {start:?}{more}"
        ))
    })
}

/// Stores the files that `output` names as `"file:outputs/NAME"` and puts their URLs there.
async fn store_referenced_files(
    files: &OutputFiles,
    prediction: &PredictionId,
    outputs: &Path,
    output: Value,
) -> Result<Value, ProviderError> {
    let mut names = Vec::new();
    visit_strings(&output, &mut |s| {
        if let Some(name) = s.strip_prefix(FILE_REFERENCE_PREFIX)
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    });
    if names.is_empty() {
        return Ok(output);
    }
    let root = tokio::fs::canonicalize(outputs)
        .await
        .map_err(|e| ProviderError::Failed(format!("cannot read {}: {e}", outputs.display())))?;
    let mut urls = HashMap::new();
    for name in names {
        let fail = |why: String| {
            ProviderError::Failed(format!(
                "the output names {FILE_REFERENCE_PREFIX}{name}, {why}"
            ))
        };
        let relative = Path::new(&name);
        if name.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(fail("which is not a plain path under outputs/".into()));
        }
        let path = match tokio::fs::canonicalize(root.join(relative)).await {
            Ok(path) if path.starts_with(&root) => path,
            Ok(_) => return Err(fail("which leads outside outputs/".into())),
            Err(_) => return Err(fail("which the command did not write".into())),
        };
        if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
            return Err(fail("which is not a file".into()));
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| fail(format!("which cannot be read: {e}")))?;
        let file_name = relative
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("output");
        let url = files
            .put(prediction, file_name, bytes.into())
            .await
            .map_err(|e| ProviderError::Retryable(format!("cannot store an output file: {e}")))?;
        urls.insert(format!("{FILE_REFERENCE_PREFIX}{name}"), url);
    }
    Ok(replace_strings(output, &|s| urls.get(s).cloned()))
}

/// `2s`, `1.5s`, `250ms`.
fn show_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    use augur_core::store::memory::MemoryStore;
    use augur_core::{
        AccountId, CreateRequest, ModelName, Prediction, Predictions, ServiceConfig, WebhookEvents,
    };
    use serde_json::json;

    struct Fixture {
        service: Predictions,
        files: OutputFiles,
    }

    fn fixture() -> Fixture {
        Fixture {
            service: Predictions::new(Arc::new(MemoryStore::new()), ServiceConfig::default()),
            files: OutputFiles::in_memory("http://augur.test"),
        }
    }

    /// `sh -c script`.
    fn sh(script: &str) -> CommandOptions {
        CommandOptions {
            command: vec!["sh".into(), "-c".into(), script.into()],
            working_dir: None,
            timeout: None,
        }
    }

    impl Fixture {
        async fn prediction(&self, input: Value) -> Prediction {
            self.service
                .create(CreateRequest {
                    id: None,
                    owner: AccountId::admin(),
                    model: ModelName::parse("acme/tool").unwrap(),
                    version: "v".into(),
                    input,
                    webhook: None,
                    webhook_events_filter: WebhookEvents::ALL,
                    deadline: None,
                    idempotency_key: None,
                    price: None,
                    max_active: None,
                })
                .await
                .unwrap()
                .prediction()
                .value
                .clone()
        }

        fn context(&self, prediction: &Prediction) -> RunContext {
            RunContext {
                prediction: prediction.clone(),
                attempt: 1,
                progress: Progress::new(self.service.clone(), prediction.id.clone(), 1, false),
                files: self.files.clone(),
            }
        }

        async fn run(
            &self,
            options: CommandOptions,
            input: Value,
        ) -> (Prediction, Result<Outcome, ProviderError>) {
            let p = self.prediction(input).await;
            let result = CommandProvider::new(options).run(self.context(&p)).await;
            let now = self.service.get(&p.id).await.unwrap().value;
            (now, result)
        }
    }

    fn failure(result: Result<Outcome, ProviderError>) -> String {
        match result {
            Err(ProviderError::Failed(why)) => why,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// Whether a process is gone (or a zombie nobody reaped yet: it runs nothing any more).
    fn is_gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    async fn assert_gone(pids: &[u32]) {
        let until = Instant::now() + Duration::from_secs(10);
        while !pids.iter().all(|&p| is_gone(p)) {
            assert!(Instant::now() < until, "processes {pids:?} still run");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a file of pids the command writes.
    async fn pids_in(file: &Path) -> Vec<u32> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(file)
                && text.ends_with('\n')
            {
                return text
                    .split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect();
            }
            assert!(Instant::now() < until, "the command never wrote {file:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn input_goes_in_on_stdin_and_stdout_is_the_output_and_stderr_the_logs() {
        let f = fixture();
        let script =
            "echo one >&2; echo two >&2; printf '%s' \"$AUGUR_PREDICTION_ID\" >&2; echo >&2; cat";
        let (p, result) = f.run(sh(script), json!({"text": "hi", "n": [1, 2]})).await;
        assert_eq!(
            result,
            Ok(Outcome::Succeeded(json!({"text": "hi", "n": [1, 2]})))
        );
        assert_eq!(p.logs, format!("one\ntwo\n{}\n", p.id));
    }

    #[tokio::test]
    async fn named_output_files_are_stored_and_the_work_dir_removed() {
        let f = fixture();
        let script = r#"echo "$AUGUR_WORK_DIR" >&2
mkdir -p "$AUGUR_OUTPUTS_DIR/sub"
printf hello > "$AUGUR_OUTPUTS_DIR/sub/a.txt"
printf unused > "$AUGUR_WORK_DIR/outputs/b.txt"
[ "$PWD" = "$AUGUR_WORK_DIR" ] || exit 9
echo '{"file": "file:outputs/sub/a.txt", "again": ["file:outputs/sub/a.txt"], "text": "file:other"}'"#;
        let (p, result) = f.run(sh(script), json!({})).await;
        let Ok(Outcome::Succeeded(output)) = result else {
            panic!("{result:?}")
        };
        let url = output["file"].as_str().unwrap();
        assert_eq!(output["again"][0], url, "one file, one copy");
        assert_eq!(output["text"], "file:other");
        let key = url.strip_prefix("/files/").expect("an Augur file URL");
        assert!(key.ends_with("/a.txt"), "{key}");
        let stored = f.files.get(key).await.unwrap().unwrap();
        assert_eq!(&stored.bytes[..], b"hello");
        assert_eq!(
            f.files.delete_for(&p.id).await.unwrap(),
            1,
            "b.txt was not named"
        );
        let work = p.logs.trim();
        assert!(work.contains("augur-command-"), "{work}");
        assert!(!Path::new(work).exists(), "{work} is still there");
    }

    #[tokio::test]
    async fn failures_say_what_went_wrong() {
        let f = fixture();
        let (_, result) = f
            .run(
                sh("for i in $(seq 1 30); do echo line $i >&2; done; exit 3"),
                json!({}),
            )
            .await;
        let why = failure(result);
        assert!(
            why.starts_with(
                "the command exited with status 3; the last lines of its stderr:\nline 11\n"
            ),
            "{why}"
        );
        assert!(why.ends_with("line 30"), "{why}");

        let (_, result) = f.run(sh("kill -9 $$"), json!({})).await;
        assert_eq!(
            failure(result),
            "the command was killed by signal 9 (it wrote nothing to stderr)"
        );

        let (_, result) = f.run(sh("echo hello world"), json!({})).await;
        let why = failure(result);
        assert!(
            why.starts_with("the command's stdout is not JSON ("),
            "{why}"
        );
        assert!(why.ends_with("it begins \"hello world\\n\""), "{why}");

        let (_, result) = f.run(sh("true"), json!({})).await;
        assert!(failure(result).contains("wrote nothing to stdout"));

        for (reference, why) in [
            (
                "file:outputs/missing.png",
                "which the command did not write",
            ),
            (
                "file:outputs/../secret",
                "which is not a plain path under outputs/",
            ),
            (
                "file:outputs//etc/passwd",
                "which is not a plain path under outputs/",
            ),
            ("file:outputs/", "which is not a plain path under outputs/"),
        ] {
            let (_, result) = f
                .run(sh(&format!("echo '\"{reference}\"'")), json!({}))
                .await;
            assert_eq!(
                failure(result),
                format!("the output names {reference}, {why}")
            );
        }
        let (_, result) = f
            .run(
                sh("ln -s /etc/hostname \"$AUGUR_OUTPUTS_DIR/x\"; echo '\"file:outputs/x\"'"),
                json!({}),
            )
            .await;
        assert_eq!(
            failure(result),
            "the output names file:outputs/x, which leads outside outputs/"
        );

        let missing = CommandOptions {
            command: vec!["/nonexistent/tool".into()],
            working_dir: None,
            timeout: None,
        };
        let (_, result) = f.run(missing, json!({})).await;
        assert!(failure(result).starts_with("cannot start the command \"/nonexistent/tool\": "));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_process_group() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!("sleep 30 & echo $$ $! > {}; wait", pids.display());
        let options = CommandOptions {
            timeout: Some(Duration::from_millis(500)),
            ..sh(&script)
        };
        let started = Instant::now();
        let (_, result) = f.run(options, json!({})).await;
        assert_eq!(failure(result), "command timed out after 500ms");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pids = pids_in(&pids).await;
        assert_eq!(pids.len(), 2);
        assert_gone(&pids).await;
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_process_group() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!("sleep 30 & echo $$ $! > {}; wait", pids.display());
        let p = f.prediction(json!({})).await;
        let provider = CommandProvider::new(sh(&script));
        let ctx = f.context(&p);
        let run = tokio::spawn(async move { provider.run(ctx).await });
        let pids = pids_in(&pids).await;
        assert!(!pids.iter().any(|&p| is_gone(p)));
        run.abort();
        assert_gone(&pids).await;
    }

    #[tokio::test]
    async fn what_the_command_leaves_running_does_not_hold_up_the_result() {
        let f = fixture();
        let started = Instant::now();
        let (_, result) = f.run(sh("sleep 30 & echo '\"done\"'"), json!({})).await;
        assert_eq!(result, Ok(Outcome::Succeeded(json!("done"))));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_crlf_trimmed() {
        let data = format!("{}\nshort\r\nlast", "x".repeat(100));
        let mut reader = BufReader::with_capacity(7, data.as_bytes());
        assert_eq!(
            next_line(&mut reader, 10).await.as_deref(),
            Some("xxxxxxxxxx")
        );
        assert_eq!(next_line(&mut reader, 10).await.as_deref(), Some("short"));
        assert_eq!(next_line(&mut reader, 10).await.as_deref(), Some("last"));
        assert_eq!(next_line(&mut reader, 10).await, None);
    }

    #[test]
    fn options_are_checked() {
        let ok = sh("true");
        assert_eq!(ok.validate(), Ok(()));
        let empty = CommandOptions {
            command: vec![],
            ..ok.clone()
        };
        assert!(
            empty
                .validate()
                .unwrap_err()
                .contains("must name a program")
        );
        let missing = CommandOptions {
            command: vec!["/nonexistent/tool".into()],
            ..ok.clone()
        };
        assert_eq!(
            missing.validate().unwrap_err(),
            "command /nonexistent/tool does not exist"
        );
        let bad_dir = CommandOptions {
            working_dir: Some("/nonexistent/dir".into()),
            ..ok
        };
        assert_eq!(
            bad_dir.validate().unwrap_err(),
            "working_dir /nonexistent/dir is not a directory"
        );
    }
}
