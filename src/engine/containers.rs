//! Job containers through the [`Engine`]: create, start, stop, kill, restart, remove, list,
//! inspect, logs, wait and exec, with docker's semantics and no daemon.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use rootfs_cache::{Digest, Store};

use super::{Engine, EngineError};
use crate::containers::{
    self, ContainerDir, ContainerError, Liveness, LogLine, LogOptions, MonitorLock, Record, State,
    Status,
};
use crate::launch::{ExecOptions, PullPolicy, RunOptions, Timings};

/// What `create` (and `run -d`) is asked for, beyond the image.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The command, mounts, environment, limits... as for `run`.
    pub run: RunOptions,
    /// `--name` (default: a generated `adjective_name`).
    pub name: Option<String>,
    /// `--label KEY=VALUE`.
    pub labels: BTreeMap<String, String>,
    /// `--rm`: removed once it exits.
    pub auto_remove: bool,
    /// When to pull the image.
    pub pull: PullPolicy,
    /// `--network NAME` of a network made with [`Engine::create_network`] (`host` and `none`
    /// are `run.network`): the members see each other's names in /etc/hosts.
    pub network: Option<String>,
    /// `--network-alias`: more names for this container in its network.
    pub network_aliases: Vec<String>,
}

/// One container, as `ps` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerSummary {
    /// 64 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The image as it was named.
    pub image: String,
    /// The image's config digest.
    pub image_id: Digest,
    /// The command (path and arguments).
    pub command: Vec<String>,
    /// Created (ns since the epoch).
    pub created: i64,
    /// Its status, checked against the processes.
    pub status: Status,
    /// The last exit code.
    pub exit_code: i32,
    /// Last start (ns since the epoch; 0: never).
    pub started_at: i64,
    /// Last stop (ns since the epoch; 0: never).
    pub finished_at: i64,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its bind mounts' host paths and targets.
    pub mounts: Vec<(PathBuf, String)>,
    /// The payload's pid while it runs, else 0.
    pub pid: i32,
}

/// The state a container is really in, from its record and the processes.
fn live_state(dir: &ContainerDir) -> Result<(State, Liveness), ContainerError> {
    let state = dir.state()?;
    let live = Liveness::of(dir.path(), &state);
    Ok((state, live))
}

/// Whether the container's payload runs.
pub(super) fn is_running(dir: &ContainerDir) -> bool {
    live_state(dir).is_ok_and(|(_, live)| live.running())
}

fn summary(dir: &ContainerDir, record: &Record) -> Result<ContainerSummary, ContainerError> {
    let (state, live) = live_state(dir)?;
    let running = live.running();
    Ok(ContainerSummary {
        id: record.id.clone(),
        name: record.name.clone(),
        image: record.image.clone(),
        image_id: record.image_id,
        command: record.argv.clone(),
        created: record.created,
        status: live.status(),
        exit_code: if live == Liveness::Lost {
            255
        } else {
            state.exit_code
        },
        started_at: state.started_at,
        finished_at: state.finished_at,
        labels: record.labels.clone(),
        mounts: record
            .options
            .volumes
            .iter()
            .map(|v| (v.host.clone(), v.container.clone()))
            .collect(),
        pid: if running { state.pid } else { 0 },
    })
}

fn rfc3339(ns: i64) -> String {
    if ns == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Engine {
    pub(super) fn containers_lock(&self) -> Result<rootfs_cache::lock::FileLock, EngineError> {
        let path = self.root.join("locks").join("containers");
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        rootfs_cache::lock::FileLock::exclusive(&path).map_err(|source| {
            EngineError::Container(ContainerError::Io {
                op: "locking",
                path,
                source,
            })
        })
    }

    fn find_container(&self, name: &str) -> Result<(Store, ContainerDir, Record), EngineError> {
        let store = self.store()?;
        let (dir, record) = containers::resolve(&store, name)?;
        Ok((store, dir, record))
    }

    /// Creates a container from `image` (pulled first as `options.pull` says) without starting
    /// it; returns its id. Its name must be free.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use skiff::{CreateOptions, Engine, EngineOptions, ExecOptions, RunOptions};
    ///
    /// let engine = Engine::new(EngineOptions::default())?;
    /// let id = engine.create(
    ///     "127.0.0.1:5000/demo/busybox",
    ///     &CreateOptions {
    ///         run: RunOptions {
    ///             command: vec!["sleep".into(), "3600".into()],
    ///             ..Default::default()
    ///         },
    ///         name: Some("job1".into()),
    ///         ..Default::default()
    ///     },
    /// )?;
    /// engine.start(&id)?;
    /// let code = engine.exec(
    ///     "job1",
    ///     &ExecOptions {
    ///         command: vec!["sh".into(), "-c".into(), "echo step 1".into()],
    ///         ..Default::default()
    ///     },
    /// )?;
    /// assert_eq!(code, 0);
    /// engine.remove("job1", true)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn create(&self, image: &str, options: &CreateOptions) -> Result<String, EngineError> {
        let name = options
            .name
            .as_deref()
            .map(containers::check_name)
            .transpose()?;
        let store = self.store()?;
        let mut timings = Timings::new();
        let (image_record, config) =
            self.resolve_image(&store, image, options.pull, &mut timings)?;
        let run_config = config.run_config();
        let mut run = options.run.clone();
        run.validate()
            .map_err(|e| EngineError::Run(Box::new(e.into())))?;
        let argv = crate::launch::command_line(&run_config, &run)
            .map_err(|e| EngineError::Run(Box::new(e.into())))?;
        let env = crate::launch::config_env(&run_config, &run)
            .map_err(|e| EngineError::Run(Box::new(e.into())))?;
        // Read now, as docker does: the files may be gone by the start.
        run.env = env
            .iter()
            .filter(|e| !run_config.env().iter().flatten().any(|i| i == *e))
            .cloned()
            .collect();
        run.env_files.clear();
        if run.stop_signal.is_none() {
            run.stop_signal = run_config.stop_signal().clone().filter(|s| !s.is_empty());
        }
        let mut networks = BTreeMap::new();
        match options.network.as_deref() {
            Some("host") => run.network = crate::launch::Network::Host,
            Some("none") => run.network = crate::launch::Network::None,
            Some(name) => {
                let network = containers::find_network(&self.root, name)?;
                run.network = crate::launch::Network::Host;
                networks.insert(network.name, options.network_aliases.clone());
            }
            None => {}
        }
        if networks.is_empty() && !options.network_aliases.is_empty() {
            return Err(ContainerError::AliasWithoutNetwork.into());
        }
        let id = containers::new_id()?;
        if run.hostname.is_none() && run.network == crate::launch::Network::None {
            run.hostname = Some(id[..12].to_owned());
        }
        let _lock = self.containers_lock()?;
        let existing = containers::all(&store)?;
        let name = match name {
            Some(name) => {
                if let Some((_, r)) = existing.iter().find(|(_, r)| r.name == name) {
                    return Err(ContainerError::NameInUse {
                        name,
                        id: r.id.clone(),
                    }
                    .into());
                }
                name
            }
            None => {
                let taken: Vec<String> = existing.iter().map(|(_, r)| r.name.clone()).collect();
                containers::generate_name(&id, &taken)
            }
        };
        let layers: Vec<Digest> = image_record.layers.iter().map(|l| l.diff_id).collect();
        let path = store
            .create_container_dir(&id, &layers, &[image_record.manifest])
            .map_err(ContainerError::from)?;
        crate::launch::test_stop_point("record");
        let record = Record {
            id: id.clone(),
            name,
            created: containers::now_ns(),
            image: image.to_owned(),
            image_id: image_record.config,
            manifest: image_record.manifest,
            layers,
            labels: options.labels.clone(),
            entrypoint: run_config.entrypoint().clone().unwrap_or_default(),
            cmd: run_config.cmd().clone().unwrap_or_default(),
            working_dir: run
                .workdir
                .clone()
                .or_else(|| run_config.working_dir().clone())
                .unwrap_or_default(),
            options: run,
            auto_remove: options.auto_remove,
            argv,
            env,
            networks,
        };
        let dir = ContainerDir::new(path);
        if let Err(err) = dir.write_record(&record) {
            let _ = store.remove_container_dir(&id);
            return Err(err.into());
        }
        Ok(id)
    }

    /// Starts a created or stopped container: its monitor (skiff re-executed) mounts its rootfs,
    /// keeping its writable layer, and starts the payload, whose output goes to the container's
    /// log. Returns once the payload runs. Starting a running container does nothing.
    pub fn start(&self, name: &str) -> Result<(), EngineError> {
        let (_, dir, record) = self.find_container(name)?;
        let (state, live) = live_state(&dir)?;
        if live.running() {
            return Ok(());
        }
        if live == Liveness::Lost {
            self.settle_lost(&dir, &record, &state, 255)?;
        }
        crate::launch::spawn_monitor(&self.monitor_program, &self.root, &record.id)?;
        Ok(())
    }

    /// Records the exit of a container whose monitor died (and whose payload is gone now),
    /// cleans up what they left, and applies `--rm`.
    fn settle_lost(
        &self,
        dir: &ContainerDir,
        record: &Record,
        state: &State,
        exit_code: i32,
    ) -> Result<(), EngineError> {
        crate::launch::release_orphan(dir.path(), &record.id);
        dir.update(|s| {
            if s.status == Status::Running && s.pid == state.pid {
                s.status = Status::Exited;
                s.pid = 0;
                s.exit_code = exit_code;
                s.finished_at = containers::now_ns();
                s.error = "the container's monitor was killed".into();
            }
        })?;
        if record.auto_remove {
            self.remove_dir(&record.id)?;
        }
        Ok(())
    }

    fn remove_dir(&self, id: &str) -> Result<(), EngineError> {
        self.enter_store_namespace()?;
        let store = self.store()?;
        store
            .remove_container_dir(id)
            .map_err(|e| EngineError::Container(e.into()))
    }

    /// Signals the payload and waits until the container is stopped (its monitor has recorded
    /// the exit and cleaned up, or, when the monitor is gone, this process did).
    fn signal_and_wait(
        &self,
        dir: &ContainerDir,
        record: &Record,
        signal: nix::sys::signal::Signal,
        grace: Option<Duration>,
    ) -> Result<(), EngineError> {
        let (state, live) = live_state(dir)?;
        if !live.running() {
            if live == Liveness::Lost {
                self.settle_lost(dir, record, &state, 255)?;
            }
            return Ok(());
        }
        let pid = nix::unistd::Pid::from_raw(state.pid);
        let _ = nix::sys::signal::kill(pid, signal);
        let mut code = 128 + signal as i32;
        if !containers::wait_pid_exit(state.pid, state.pid_start, grace) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            code = 137;
            containers::wait_pid_exit(state.pid, state.pid_start, None);
        }
        if live == Liveness::Orphaned {
            self.settle_lost(dir, record, &state, code)?;
        } else {
            MonitorLock::wait_released(dir.path());
            // The monitor was killed while cleaning up.
            if let Ok((now, Liveness::Lost)) = live_state(dir) {
                self.settle_lost(dir, record, &now, code)?;
            }
        }
        Ok(())
    }

    /// Starts the container and attaches to it, as `docker start -a [-i]`: its output from
    /// this start on goes to `emit` until it exits, and its exit code is returned. With
    /// `stdin`, for a container created with `interactive`, what `stdin` reads is the
    /// payload's input, which ends where `stdin` does.
    pub fn start_attached(
        &self,
        name: &str,
        stdin: Option<Box<dyn std::io::Read + Send>>,
        emit: &mut dyn FnMut(&LogLine) -> std::io::Result<()>,
    ) -> Result<i32, EngineError> {
        let (_, dir, record) = self.find_container(name)?;
        let log = dir.log_path(&record.id);
        let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        self.start(name)?;
        if let Some(mut input) = stdin.filter(|_| record.options.interactive) {
            let path = dir.path().join(crate::launch::STDIN_FIFO);
            // Non-blocking open: ENXIO rather than a hang when nothing reads any more.
            let fifo = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .map_err(|source| ContainerError::Io {
                    op: "attaching to the input FIFO",
                    path: path.clone(),
                    source,
                })?;
            let _ = nix::fcntl::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&fifo),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            );
            // A thread of the caller's: it may block in a read of `stdin` after the payload
            // ends; the caller's exit ends it.
            std::thread::spawn(move || {
                let mut fifo = fifo;
                let _ = std::io::copy(&mut input, &mut fifo);
            });
        }
        let running = || {
            dir.state()
                .map(|s| Liveness::of(dir.path(), &s).running())
                .unwrap_or(false)
        };
        containers::read_logs(
            &log,
            &LogOptions {
                follow: true,
                tail: None,
            },
            from,
            &running,
            emit,
        )?;
        self.wait(name)
    }

    /// Stops a container: its stop signal (`--stop-signal`, the image's, else SIGTERM), then
    /// SIGKILL after `timeout` (default: `--stop-timeout`, else 10 s). Stopping a stopped
    /// container does nothing.
    /// A `timeout` of `Duration::MAX` waits forever.
    pub fn stop(&self, name: &str, timeout: Option<Duration>) -> Result<(), EngineError> {
        self.stop_with_signal(name, None, timeout)
    }

    /// [`Engine::stop`] with another signal than the container's stop signal.
    pub fn stop_with_signal(
        &self,
        name: &str,
        signal: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(), EngineError> {
        let (_, dir, record) = self.find_container(name)?;
        let signal = match signal.or(record.options.stop_signal.as_deref()) {
            Some(s) => {
                crate::launch::parse_signal(s).map_err(|e| EngineError::Run(Box::new(e.into())))?
            }
            None => nix::sys::signal::Signal::SIGTERM,
        };
        let grace = timeout.or_else(|| match record.options.stop_timeout {
            Some(s) => u64::try_from(s).ok().map(Duration::from_secs),
            None => Some(Duration::from_secs(10)),
        });
        self.signal_and_wait(&dir, &record, signal, grace)
    }

    /// Sends `signal` (docker's names or numbers; default KILL) to a running container.
    pub fn kill(&self, name: &str, signal: Option<&str>) -> Result<(), EngineError> {
        let (_, dir, record) = self.find_container(name)?;
        let signal = match signal {
            Some(s) => {
                crate::launch::parse_signal(s).map_err(|e| EngineError::Run(Box::new(e.into())))?
            }
            None => nix::sys::signal::Signal::SIGKILL,
        };
        let (state, live) = live_state(&dir)?;
        if !live.running() {
            return Err(ContainerError::NotRunning(record.id).into());
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid), signal).map_err(|e| {
            EngineError::Container(ContainerError::Start(format!(
                "cannot kill container {}: {e}",
                record.id
            )))
        })?;
        if signal == nix::sys::signal::Signal::SIGKILL {
            // As docker: kill returns once the container is down.
            self.signal_and_wait(&dir, &record, signal, None)?;
        }
        Ok(())
    }

    /// Stops (as [`Engine::stop`]) and starts a container again.
    pub fn restart(&self, name: &str, timeout: Option<Duration>) -> Result<(), EngineError> {
        self.stop(name, timeout)?;
        self.start(name)
    }

    /// Removes a container and its writable layer and log; a running one only with `force`
    /// (it is killed first).
    pub fn remove(&self, name: &str, force: bool) -> Result<(), EngineError> {
        let (_, dir, record) = self.find_container(name)?;
        let (_, live) = live_state(&dir)?;
        if live.running() {
            if !force {
                return Err(ContainerError::Running(record.name).into());
            }
            self.signal_and_wait(&dir, &record, nix::sys::signal::Signal::SIGKILL, None)?;
        } else if live == Liveness::Lost {
            crate::launch::release_orphan(dir.path(), &record.id);
        }
        self.remove_dir(&record.id)
    }

    /// The containers (`all`: stopped ones too), newest first.
    pub fn list(&self, all: bool) -> Result<Vec<ContainerSummary>, EngineError> {
        let store = self.store()?;
        let mut out = Vec::new();
        for (dir, record) in containers::all(&store)? {
            match summary(&dir, &record) {
                Ok(s) if all || s.status == Status::Running => out.push(s),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(container = %record.id, err = %crate::error_chain(&err), "skipping")
                }
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.created));
        Ok(out)
    }

    /// A container as `docker inspect` shows it (the fields CI runners read).
    pub fn inspect_container(&self, name: &str) -> Result<serde_json::Value, EngineError> {
        let (_, dir, record) = self.find_container(name)?;
        let s = summary(&dir, &record)?;
        let state = dir.state()?;
        let running = s.status == Status::Running;
        let o = &record.options;
        let mounts: Vec<serde_json::Value> = o
            .volumes
            .iter()
            .map(|v| {
                serde_json::json!({
                    "Type": "bind",
                    "Source": v.host,
                    "Destination": v.container,
                    "Mode": if v.read_only { "ro" } else { "" },
                    "RW": !v.read_only,
                    "Propagation": "rprivate",
                })
            })
            .collect();
        let network = match o.network {
            crate::launch::Network::Host => "host",
            crate::launch::Network::None => "none",
        };
        let (path, args) = record
            .argv
            .split_first()
            .map_or((String::new(), Vec::new()), |(p, a)| {
                (p.clone(), a.to_vec())
            });
        Ok(serde_json::json!({
            "Id": record.id,
            "Created": rfc3339(record.created),
            "Path": path,
            "Args": args,
            "State": {
                "Status": s.status.as_str(),
                "Running": running,
                "Paused": false,
                "Restarting": false,
                "OOMKilled": state.oom_killed,
                "Dead": false,
                "Pid": s.pid,
                "ExitCode": s.exit_code,
                "Error": state.error,
                "StartedAt": rfc3339(state.started_at),
                "FinishedAt": rfc3339(state.finished_at),
            },
            "Image": record.image_id.to_string(),
            "LogPath": dir.log_path(&record.id),
            "Name": format!("/{}", record.name),
            "RestartCount": state.restart_count,
            "Driver": "overlay",
            "Platform": "linux",
            "Mounts": mounts,
            "Config": {
                "Hostname": o.hostname.clone().unwrap_or_else(|| record.id[..12].to_owned()),
                "User": o.user.clone().unwrap_or_default(),
                "Tty": o.tty,
                "OpenStdin": o.interactive,
                "Env": record.env,
                "Cmd": if o.command.is_empty() && o.entrypoint.is_none() { record.cmd.clone() } else { o.command.clone() },
                "Image": record.image,
                "WorkingDir": record.working_dir,
                "Entrypoint": match &o.entrypoint {
                    Some(e) if e.is_empty() => Vec::new(),
                    Some(e) => vec![e.clone()],
                    None => record.entrypoint.clone(),
                },
                "Labels": record.labels,
                "StopSignal": o.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into()),
            },
            "HostConfig": {
                "NetworkMode": network,
                "Privileged": o.privileged,
                "AutoRemove": record.auto_remove,
                "ReadonlyRootfs": o.read_only,
                "Binds": o.volumes.iter().map(|v| format!("{}:{}{}", v.host.display(), v.container, if v.read_only { ":ro" } else { "" })).collect::<Vec<_>>(),
                "CapAdd": o.cap_add,
                "CapDrop": o.cap_drop,
            },
            "NetworkSettings": {
                "Networks": record.networks.iter().map(|(n, aliases)| (n.clone(), serde_json::json!({ "Aliases": aliases }))).collect::<serde_json::Map<_, _>>(),
            },
        }))
    }

    /// Gives a container's log lines to `emit` (`follow`: until it stops).
    pub fn logs(
        &self,
        name: &str,
        options: &LogOptions,
        emit: &mut dyn FnMut(&LogLine) -> std::io::Result<()>,
    ) -> Result<(), EngineError> {
        let (_, dir, record) = self.find_container(name)?;
        let running = || {
            dir.state()
                .map(|s| Liveness::of(dir.path(), &s).running())
                .unwrap_or(false)
        };
        containers::read_logs(&dir.log_path(&record.id), options, 0, &running, emit)?;
        Ok(())
    }

    /// Waits until a container stops; its exit code.
    pub fn wait(&self, name: &str) -> Result<i32, EngineError> {
        let (_, dir, record) = self.find_container(name)?;
        loop {
            let (state, live) = live_state(&dir)?;
            match live {
                Liveness::Recorded(Status::Running) => MonitorLock::wait_released(dir.path()),
                Liveness::Orphaned => {
                    containers::wait_pid_exit(state.pid, state.pid_start, None);
                }
                Liveness::Lost => {
                    self.settle_lost(&dir, &record, &state, 255)?;
                    return Ok(255);
                }
                Liveness::Recorded(_) => return Ok(state.exit_code),
            }
            if !dir.exists() {
                // Removed by --rm: the exit code went with it.
                return Ok(state.exit_code);
            }
        }
    }

    /// Runs a command in a running container (its namespaces, cgroup, user, capabilities and
    /// seccomp filter; its environment plus `options.env`); returns the command's exit code
    /// (126/127 when it cannot be run), or 0 at once with `detach`.
    ///
    /// The process must be single-threaded; rootless, it must not have pulled or run anything
    /// before (it joins the container's user namespace), unless it is in that namespace
    /// already (an earlier exec into a container whose monitor this process started).
    pub fn exec(&self, name: &str, options: &ExecOptions) -> Result<i32, EngineError> {
        let (_, dir, record) = self.find_container(name)?;
        let (state, live) = live_state(&dir)?;
        if !live.running() {
            return Err(ContainerError::NotRunning(record.id).into());
        }
        if self.rootless
            && crate::launch::in_user_namespace()
            && !crate::launch::same_user_namespace(state.pid)
        {
            return Err(EngineError::Run(Box::new(crate::launch::RunError::Launch(
                "exec must join the container's user namespace, and this process already \
                 entered skiff's own (exec from a fresh process)"
                    .into(),
            ))));
        }
        crate::launch::exec(
            &record.id,
            dir.path(),
            state.pid,
            state.unified_cgroup,
            &record.options,
            options,
        )
        .map_err(|e| EngineError::Run(Box::new(e)))
    }
}
