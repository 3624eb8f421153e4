//! Timely's cluster mode: one dataflow over several processes, on one machine
//! or many.
//!
//! Every process runs the same command with its own `--process`. Process 0
//! leads: it reads the inputs, owns the idea state (the dataflow's serial
//! part, on worker 0) and writes every output: files, Postgres, Redis, the
//! API. The other processes follow: their workers embed and prepare signals
//! (the model's forward passes, NFKC normalization, LSH signatures, labels),
//! the work that grows with the stream, and send them to the leader. Results
//! do not depend on the layout as long as every process computes the same
//! embeddings: same model files and the same BLAS kernels (or streams that
//! carry their vectors).

use std::path::Path;

use anyhow::{bail, Context, Result};
use timely::CommunicationConfig;

use crate::cli::ClusterArgs;

/// Where this process stands in a cluster of more than one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index; 0 leads.
    pub process: usize,
    /// One `host:port` per process, in process order.
    pub addresses: Vec<String>,
}

impl Cluster {
    /// The cluster the arguments describe; `None` for a lone process.
    pub fn from_args(args: &ClusterArgs) -> Result<Option<Cluster>> {
        if args.processes == 0 {
            bail!("--processes must be at least 1");
        }
        if args.process >= args.processes {
            bail!(
                "--process {} is out of range: with --processes {} use 0 to {}",
                args.process,
                args.processes,
                args.processes - 1
            );
        }
        if args.processes == 1 {
            return Ok(None);
        }
        let Some(path) = &args.hostfile else {
            bail!(
                "--processes {} needs --hostfile: a file with one host:port per line, line i for process i",
                args.processes
            );
        };
        let addresses = read_hostfile(path, args.processes)?;
        Ok(Some(Cluster {
            process: args.process,
            addresses,
        }))
    }

    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Whether this process leads (reads the inputs, writes the outputs).
    pub fn leads(&self) -> bool {
        self.process == 0
    }
}

/// The first `processes` addresses of a hostfile (blank lines and `#`
/// comments skipped).
fn read_hostfile(path: &Path, processes: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read --hostfile {}: give a file with one host:port per line",
            path.display()
        )
    })?;
    let addresses = parse_hostfile(&text);
    if addresses.len() < processes {
        bail!(
            "--hostfile {} lists {} address(es); --processes {processes} needs one host:port per process",
            path.display(),
            addresses.len()
        );
    }
    Ok(addresses.into_iter().take(processes).collect())
}

fn parse_hostfile(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Timely's configuration: `workers` threads in this process, joined to the
/// other processes of `cluster` if there is one.
pub fn timely_config(workers: usize, cluster: Option<&Cluster>) -> timely::Config {
    match cluster {
        Some(c) => timely::Config {
            communication: CommunicationConfig::Cluster {
                threads: workers.max(1),
                process: c.process,
                addresses: c.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        },
        None if workers <= 1 => timely::Config::thread(),
        None => timely::Config::process(workers),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn args(processes: usize, process: usize, hostfile: Option<PathBuf>) -> ClusterArgs {
        ClusterArgs {
            processes,
            process,
            hostfile,
        }
    }

    #[test]
    fn a_lone_process_is_no_cluster() {
        assert_eq!(Cluster::from_args(&args(1, 0, None)).unwrap(), None);
    }

    #[test]
    fn the_hostfile_gives_one_address_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(
            &path,
            "# the leader first\n127.0.0.1:2101\n\n  127.0.0.1:2102 \n127.0.0.1:2103\n",
        )
        .unwrap();
        let c = Cluster::from_args(&args(2, 1, Some(path.clone())))
            .unwrap()
            .unwrap();
        assert_eq!(c.addresses, ["127.0.0.1:2101", "127.0.0.1:2102"]);
        assert!(!c.leads());
        assert_eq!(c.processes(), 2);
        let err = Cluster::from_args(&args(4, 0, Some(path))).unwrap_err();
        assert!(err.to_string().contains("lists 3 address"), "{err}");
    }

    #[test]
    fn bad_arguments_say_what_to_give() {
        let err = Cluster::from_args(&args(2, 0, None)).unwrap_err();
        assert!(err.to_string().contains("needs --hostfile"), "{err}");
        let err = Cluster::from_args(&args(2, 2, None)).unwrap_err();
        assert!(err.to_string().contains("use 0 to 1"), "{err}");
        assert!(Cluster::from_args(&args(0, 0, None)).is_err());
    }
}
