//! `dc-worker`: the process of one run, started by a `dc-host` supervisor
//! (`dc_runtime::supervisor`), never by hand. It reads its start (settings,
//! run, manifest, plugin path) from stdin, says `worker::STARTED_LINE`, and
//! runs the run (`dc_runtime::worker::run`). A program of its own, not a
//! `dc-host` subcommand, so that starting a run does not load the CLI, the REST
//! API, the dashboard and the orchestrator: it is linked without them, and as a
//! position-dependent executable (see `build.rs`), which spares the dynamic
//! loader the relocations of a position-independent one at every start.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use dc_host::startup::{Schema, connect};
use dc_runtime::worker::{STARTED_LINE, WorkerStart};

/// The process of one run of a plugin. Started by `dc-host` (`run`, `serve`),
/// which writes the run's start on stdin; not meant to be run by hand.
#[derive(Parser)]
#[command(name = "dc-worker", version)]
struct Args {
    /// The run to execute (its full id).
    #[arg(long, value_parser = dc_core::RuntimeId::parse)]
    runtime_id: dc_core::RuntimeId,
    /// The run's time limit; the worker ends the run itself a little after
    /// it if its supervisor has not.
    #[arg(long)]
    time_limit_ms: Option<u64>,
}

fn real_main() -> anyhow::Result<ExitCode> {
    let Args { runtime_id, time_limit_ms } = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("worker: cannot read its start (settings and run) from stdin")?;
    let start: WorkerStart =
        serde_json::from_str(&text).context("worker: the start on stdin (settings and run) is not valid")?;
    if start.run.runtime_id != runtime_id {
        anyhow::bail!("worker: started for run {runtime_id} but given run {} on stdin", start.run.runtime_id);
    }
    // the supervisor reads this line: the worker started
    eprintln!("{STARTED_LINE}");
    let WorkerStart { settings, run, manifest, module_path } = start;
    let exe = std::env::current_exe().context("cannot find the dc-worker executable")?;
    let host_exe = exe.with_file_name(dc_runtime::HOST_PROGRAM);
    let (env, sink) = connect(&rt, settings, Schema::Trusted, host_exe)?;
    let limit = time_limit_ms.map(std::time::Duration::from_millis);
    let code = dc_runtime::worker::run(rt.handle(), &env, &run, &manifest, &module_path, limit);
    if let Some(s) = sink {
        s.close();
        // nothing is dropped in silence: the run records how many of its log records were lost
        let dropped = s.dropped();
        if dropped > 0
            && let Err(e) = rt.block_on(dc_core::runs::set_dropped_logs(&env.db, &runtime_id, dropped))
        {
            eprintln!("dc-worker: {dropped} log records were dropped and that could not be recorded: {e}");
        }
    }
    Ok(ExitCode::from(code as u8))
}

// SIGPIPE stays ignored (Rust's default): stderr goes to a supervisor that may
// die before the worker, which must still record how its run ended.
fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", dc_host::report(&e));
            ExitCode::from(2)
        }
    }
}
