//! A job container driven from Rust, as a CI runner embedding skiff would: create, start,
//! exec (twice), logs, stop, start again, kill, wait, list, inspect and remove, through
//! `skiff::Engine` alone. The monitor of the detached container is this program re-executed,
//! so `serve_monitor_if_requested` comes first in `main`.
//!
//! `cargo run --example job_container -- STORE IMAGE` (the image already in the store at STORE);
//! tests/library.rs runs it as root and as the unprivileged test user.

use std::time::Duration;

use skiff::{
    CreateOptions, Engine, EngineOptions, ExecOptions, LogOptions, PullPolicy, RunOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    skiff::serve_monitor_if_requested();
    let mut args = std::env::args().skip(1);
    let (Some(root), Some(image)) = (args.next(), args.next()) else {
        return Err("usage: job_container STORE IMAGE".into());
    };
    let engine = Engine::new(EngineOptions {
        root: Some(root.into()),
        ..Default::default()
    })?;
    let sh = |script: &str| vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let id = engine.create(
        &image,
        &CreateOptions {
            run: RunOptions {
                command: sh("echo started; exec sleep 1000"),
                env: vec!["STAGE=test".into()],
                ..Default::default()
            },
            name: Some("lib-job".into()),
            labels: [("runner".to_owned(), "1".to_owned())].into(),
            pull: PullPolicy::Never,
            ..Default::default()
        },
    )?;
    println!("created {}", id.len());
    engine.start("lib-job")?;
    let exec = |script: &str| {
        engine.exec(
            "lib-job",
            &ExecOptions {
                command: sh(script),
                ..Default::default()
            },
        )
    };
    println!(
        "exec {}",
        exec("echo in $STAGE; echo kept > /file; exit 3")?
    );
    let listed = engine.list(false)?;
    println!(
        "running {} {:?}",
        listed.len(),
        listed.first().map(|c| (c.name.as_str(), c.status.as_str()))
    );
    let inspect = engine.inspect_container(&id[..12])?;
    println!(
        "inspect {} {}",
        inspect["State"]["Running"], inspect["Config"]["Labels"]["runner"]
    );
    engine.stop("lib-job", Some(Duration::from_secs(1)))?;
    println!("stopped {}", engine.wait("lib-job")?);
    engine.start("lib-job")?;
    println!("exec {}", exec("cat /file")?);
    engine.kill("lib-job", None)?;
    println!("killed {}", engine.wait("lib-job")?);
    let mut logs = String::new();
    engine.logs("lib-job", &LogOptions::default(), &mut |line| {
        logs.push_str(&line.log);
        Ok(())
    })?;
    println!("logs {logs:?}");
    engine.remove("lib-job", false)?;
    println!("left {}", engine.list(true)?.len());
    Ok(())
}
