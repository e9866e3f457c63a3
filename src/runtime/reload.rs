//! Reloads: a new config is validated and compiled off the request path (protection
//! state carried over where its config did not change), then handed to every worker in
//! two phases, so a generation is never half applied. Serialized: SIGHUP, the admin API
//! and the watcher may race.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::worker::WorkerCommand;
use super::GatewayState;
use crate::config::{AppsSource, ClusterConfig, Config, ListenConfig};
use crate::snapshot::Snapshot;

/// How long every worker has to prepare a new generation (each answers on its next
/// 10 ms tick) before a reload is aborted.
const PREPARE_WITHIN: Duration = Duration::from_secs(2);

impl GatewayState {
    /// Validates `config` off the request path and hands the new generation to every
    /// worker; on any error the running generation stays, and the error says why.
    /// Reloads are serialized (SIGHUP and the admin API may race).
    pub fn reload(&self, config: Config) -> Result<u64, String> {
        let _one_at_a_time = self.reloading.lock();
        let result = self.try_reload(config);
        if result.is_err() {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Reads `path` and reloads it (SIGHUP, `POST /reload`, admin edits, the watcher);
    /// a file that does not load counts as a refused reload too.
    pub fn reload_file(&self, path: &std::path::Path) -> Result<u64, String> {
        match crate::config::load(path) {
            Ok(config) => self.reload(config),
            Err(errors) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
    }

    fn try_reload(&self, config: Config) -> Result<u64, String> {
        // A port 0 listener stays where it was bound.
        let same = |a: &ListenConfig, b: &ListenConfig| {
            a.proxy_protocol == b.proxy_protocol && (a.addr == b.addr || a.addr.port() == 0)
        };
        let tls_listen = config.tls.as_ref().map_or(&[][..], |t| &t.listen[..]);
        let listen = || config.server.listen.iter().chain(tls_listen);
        let ignored = listen().count() != self.listen_config.len()
            || listen()
                .zip(&self.listen_config)
                .any(|(new, old)| !same(new, old) || new.tls != old.tls);
        // Nonces were stored with expiries computed from the running window and the cache
        // was sized at start: changing either under it could re-admit replays.
        let apps = &config.apps;
        let (window, capacity, source) = &self.fixed_at_start;
        if (apps.timestamp_window, apps.replay_capacity) != (*window, *capacity)
            || !same_redis_source(&apps.source, source)
        {
            return Err("apps.timestamp_window, apps.replay_capacity and apps.redis are fixed at start: restart to change them".into());
        }
        let cluster = config.traffic.cluster.as_ref();
        if cluster.map(without_files_digest)
            != self.cluster_at_start.as_ref().map(without_files_digest)
        {
            return Err("[cluster] is fixed at start (its Redis, the gateway count, id and lease interval): restart to change it".into());
        }
        // Renewed Redis certificates: the rest of the config reloads, and the connections
        // keep the files read at start until a restart (said at every reload until then).
        if cluster != self.cluster_at_start.as_ref() || apps.source != *source {
            log::warn!(
                "reload: the Redis CA, certificate or key files changed; the Redis connections keep those read at start until a restart"
            );
        }
        // The admin listener stays where it was bound: the token it needs there cannot be
        // reloaded away by a config that moves it to loopback.
        if let Some(bound) = self.admin_bound.filter(|a| !a.ip().is_loopback()) {
            if config.admin.token.is_none() {
                return Err(format!(
                    "admin.token: required: the admin listener is bound to {bound} until a restart"
                ));
            }
        }
        let generation = self.generation.load(Ordering::SeqCst) + 1;
        // Protection state (breakers, target health, isolation groups, retry budgets)
        // carries over wherever its config did not change.
        let previous = self.snapshot.read().map(|s| s.clone()).ok();
        let snapshot =
            Snapshot::build_after(config, generation, previous.as_deref()).map_err(|errs| {
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        if ignored {
            log::warn!(
                "reload: server.listen or tls.listen changed; listeners change only on restart"
            );
        }
        // Two phases: every worker prepares the generation (its own upstream state) and
        // says so; only when all have does any switch to it. A worker that does not
        // answer in time aborts the reload everywhere: never half applied.
        let commands = self
            .worker_commands
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let (ready_tx, ready) = crossbeam_channel::unbounded();
        for tx in &commands {
            let _ = tx.send(WorkerCommand::Prepare(snapshot.clone(), ready_tx.clone()));
        }
        drop(ready_tx);
        let deadline = Instant::now() + PREPARE_WITHIN;
        let mut prepared = 0;
        while prepared < commands.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready.recv_timeout(left) {
                Ok(_) => prepared += 1,
                Err(_) => break,
            }
        }
        let commit = prepared == commands.len();
        for tx in &commands {
            let _ = tx.send(if commit {
                WorkerCommand::Commit(generation)
            } else {
                WorkerCommand::Abort(generation)
            });
        }
        if !commit {
            return Err(format!(
                "{} of {} workers did not prepare generation {generation} within {PREPARE_WITHIN:?}; nothing changed",
                commands.len() - prepared,
                commands.len()
            ));
        }
        self.control.serving(&snapshot);
        if let Ok(mut current) = self.snapshot.write() {
            *current = snapshot.clone();
        }
        self.generation.store(generation, Ordering::SeqCst);
        log::info!(
            "reload: generation {generation} committed on {} workers",
            commands.len()
        );
        Ok(generation)
    }
}

/// `[cluster]` but for the contents of its Redis TLS files.
fn without_files_digest(cluster: &ClusterConfig) -> ClusterConfig {
    let mut cluster = cluster.clone();
    cluster.redis.files_digest = [0; 32];
    cluster
}

/// The same registry source but for the contents of its Redis TLS files.
fn same_redis_source(a: &AppsSource, b: &AppsSource) -> bool {
    match (a, b) {
        (
            AppsSource::Redis {
                target: ta,
                cache_ttl: la,
                cache_size: za,
            },
            AppsSource::Redis {
                target: tb,
                cache_ttl: lb,
                cache_size: zb,
            },
        ) => {
            let mut ta = ta.clone();
            ta.files_digest = tb.files_digest;
            (ta, la, za) == (tb.clone(), lb, zb)
        }
        (a, b) => a == b,
    }
}
