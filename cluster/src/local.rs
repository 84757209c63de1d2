//! [`LocalCluster`]: `nats-server` processes (JetStream, clustered, on loopback, data in a
//! temporary directory) for tests, figures and trying the log out. Every process is
//! killed when the value is dropped, also when a test fails.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a started node to accept connections, in milliseconds.
pub const NATS_READY_TIMEOUT_MS: u64 = 20_000;
/// NATS' largest message, in bytes (its default is 1 MiB): a record holds a whole append,
/// and the engine bounds one event at 8 MiB (`EVENT_BYTES_MAX`).
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of a node's log quoted in an error.
const LOG_QUOTE_BYTES_MAX: u64 = 4_096;

/// Why a local cluster could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No `nats-server` binary.
    #[error(
        "nats-server not found ({looked}). Install it: `bash scripts/ensure-nats-server.sh` (as root or with password-less sudo), or `sudo apt-get install nats-server`, or set NATS_SERVER to its path"
    )]
    NotInstalled {
        /// Where it was looked for.
        looked: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// A node did not start listening in time, or exited.
    #[error("node {node} not ready: {detail}")]
    NotReady {
        /// The node's name.
        node: String,
        /// What happened, with the end of its log.
        detail: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Clustered `nats-server` processes on 127.0.0.1 with JetStream, killed on drop.
#[derive(Debug)]
pub struct LocalCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    // Dropped after the processes are killed (fields drop in order, after `Drop::drop`).
    dir: tempfile::TempDir,
}

impl LocalCluster {
    /// The `nats-server` binary: `$NATS_SERVER`, else on `PATH`, else `/usr/sbin` or
    /// `/usr/local/bin` (Debian installs it in `/usr/sbin`, not on a user's `PATH`).
    pub fn nats_server_binary() -> Result<PathBuf, ClusterError> {
        if let Some(path) = std::env::var_os("NATS_SERVER") {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(ClusterError::NotInstalled {
                    looked: format!("NATS_SERVER={} is not a file", path.display()),
                })
            };
        }
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>());
        on_path
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| ClusterError::NotInstalled {
                looked: "looked on PATH, in /usr/sbin and /usr/local/bin".to_owned(),
            })
    }

    /// Starts `nodes` clustered nodes (named `n1`, `n2`, ...) on free loopback ports, each
    /// with its JetStream data in a new temporary directory, and waits until each accepts
    /// connections. JetStream elects its leaders a few seconds later: `JetStreamLog::open`
    /// waits for that.
    pub fn start(nodes: usize) -> Result<LocalCluster, ClusterError> {
        let binary = Self::nats_server_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("osmium-nats-")
            .tempdir()
            .map_err(io_error("create a temporary directory"))?;
        // Hold every listener until all ports are chosen, so that no two are the same.
        let mut listeners = Vec::with_capacity(nodes * 2);
        for _ in 0..nodes * 2 {
            listeners.push(TcpListener::bind("127.0.0.1:0").map_err(io_error("find a free port"))?);
        }
        let mut ports = Vec::with_capacity(listeners.len());
        for listener in &listeners {
            ports.push(
                listener
                    .local_addr()
                    .map_err(io_error("find a free port"))?
                    .port(),
            );
        }
        drop(listeners);
        let cluster_ports: Vec<u16> = ports[nodes..].to_vec();
        let mut cluster = LocalCluster {
            binary,
            nodes: Vec::with_capacity(nodes),
            dir,
        };
        for index in 0..nodes {
            let name = format!("n{}", index + 1);
            let routes: Vec<String> = cluster_ports
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != index)
                .map(|(_, port)| format!("nats-route://127.0.0.1:{port}"))
                .collect();
            let store = cluster.dir.path().join(&name);
            let config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nmax_payload: {max_payload}\njetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 268435456\n  max_file_store: 4294967296\n}}\ncluster {{\n  name: osmium-local\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{routes}]\n}}\n",
                client = ports[index],
                max_payload = MAX_PAYLOAD_BYTES,
                store = store.display(),
                cluster_port = cluster_ports[index],
                routes = routes.join(", "),
            );
            let config_path = cluster.dir.path().join(format!("{name}.conf"));
            fs::write(&config_path, config)
                .map_err(io_error(format!("write {}", config_path.display())))?;
            let log = cluster.dir.path().join(format!("{name}.log"));
            cluster.nodes.push(Node {
                name,
                client_port: ports[index],
                config: config_path,
                log,
                child: None,
            });
        }
        for index in 0..nodes {
            cluster.spawn(index)?;
        }
        for index in 0..nodes {
            cluster.wait_listening(index)?;
        }
        Ok(cluster)
    }

    /// Every node's client URL (`nats://127.0.0.1:PORT`), in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client_port))
            .collect()
    }

    /// Node names (`n1`, ...), in node order: the server names JetStream reports.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.name.clone()).collect()
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// The temporary directory holding the nodes' configurations, logs and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills node `index` with SIGKILL (no goodbye to its peers) and reaps it.
    pub fn kill(&mut self, index: usize) -> Result<(), ClusterError> {
        let node = self.node_mut(index)?;
        if let Some(mut child) = node.child.take() {
            let what = format!("kill {}", node.name);
            child.kill().map_err(io_error(what.clone()))?;
            child.wait().map_err(io_error(what))?;
        }
        Ok(())
    }

    /// Starts node `index` again on its ports and data, and waits until it listens.
    pub fn restart(&mut self, index: usize) -> Result<(), ClusterError> {
        self.kill(index)?;
        self.spawn(index)?;
        self.wait_listening(index)
    }

    /// Whether node `index` runs (was started and not killed).
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes
            .get(index)
            .is_some_and(|node| node.child.is_some())
    }

    /// The end of node `index`'s log (for failure messages).
    pub fn log_tail(&self, index: usize) -> String {
        self.nodes
            .get(index)
            .map_or_else(String::new, |node| quote_log(&node.log))
    }

    fn node_mut(&mut self, index: usize) -> Result<&mut Node, ClusterError> {
        let nodes = self.nodes.len();
        self.nodes.get_mut(index).ok_or_else(|| ClusterError::Io {
            what: format!("node {index}"),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                format!("the cluster has {nodes} nodes"),
            ),
        })
    }

    fn spawn(&mut self, index: usize) -> Result<(), ClusterError> {
        let binary = self.binary.clone();
        let node = self.node_mut(index)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(io_error(format!("open {}", node.log.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_error("duplicate a log handle"))?;
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(io_error(format!(
                "start {} ({})",
                node.name,
                binary.display()
            )))?;
        node.child = Some(child);
        Ok(())
    }

    fn wait_listening(&mut self, index: usize) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_millis(NATS_READY_TIMEOUT_MS);
        let node = self.node_mut(index)?;
        let address = SocketAddr::from(([127, 0, 0, 1], node.client_port));
        loop {
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                node.child = None;
                return Err(ClusterError::NotReady {
                    node: node.name.clone(),
                    detail: format!("exited ({status}):\n{}", quote_log(&node.log)),
                });
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotReady {
                    node: node.name.clone(),
                    detail: format!(
                        "not listening on {address} after {NATS_READY_TIMEOUT_MS} ms:\n{}",
                        quote_log(&node.log)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn quote_log(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let length = file.metadata().map_or(0, |metadata| metadata.len());
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(LOG_QUOTE_BYTES_MAX)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    text
}
