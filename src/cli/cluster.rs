use super::{FunctionArgs, EXIT_OK};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(after_help = "Examples (one scheduler, executors on every machine that can read the lake):
  wisp cluster scheduler --bind 0.0.0.0:50050 --external-host sched.internal --watchlist NetworkAllowlist=s3://cfg/allow.csv
  wisp cluster executor --scheduler sched.internal:50050 --bind 0.0.0.0:50051 --watchlist NetworkAllowlist=s3://cfg/allow.csv
  wisp detect --lake s3://lake/entra --engine ballista://sched.internal:50050 --from 2026-11-01T00:00:00Z --to 2026-11-20T00:00:00Z

Every process of a cluster takes the same --asn-db, --geo-db and --watchlist: functions run where the
data is. The lake must be where every executor can read it (an object store, or a shared path).")]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub role: Role,
}

#[derive(Debug, Subcommand)]
pub enum Role {
    /// Plan queries from clients and hand their tasks to executors.
    Scheduler(SchedulerArgs),
    /// Run tasks: scan the lake, evaluate wisp's functions, serve shuffle data.
    Executor(ExecutorArgs),
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on (gRPC for clients and executors).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: std::net::SocketAddr,
    /// The host name executors and clients reach this scheduler by (default: the bind address).
    #[arg(long)]
    pub external_host: Option<String>,
    /// An executor not heard from for this long is dead: its tasks run again elsewhere.
    #[arg(long, default_value_t = 60)]
    pub executor_timeout_secs: u64,
    // What the process loads at start (the same on every process of a cluster).
    #[command(flatten)]
    pub functions: FunctionArgs,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub scheduler: String,
    /// Address of the executor's Flight service (shuffle data for other executors and clients).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub bind: std::net::SocketAddr,
    /// Port of the executor's gRPC service (tasks from the scheduler), on the same address.
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// The host name others reach this executor by (default: the bind address).
    #[arg(long)]
    pub external_host: Option<String>,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long)]
    pub concurrent_tasks: Option<usize>,
    /// Memory pool over all tasks, in MiB; operators spill beyond their share.
    #[arg(long, default_value_t = 2560)]
    pub memory_mb: usize,
    /// Folder for shuffle files and spills (default: a temporary folder).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// How often the executor reports to the scheduler, in seconds.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
    // What the process loads at start (the same on every process of a cluster).
    #[command(flatten)]
    pub functions: FunctionArgs,
}

pub async fn run(a: ClusterArgs) -> anyhow::Result<i32> {
    crate::cluster::init_logging();
    // Plans travel as nested protobuf messages, encoded and decoded recursively on the runtime's
    // worker threads: a detection's plan overflows tokio's 2 MiB default stack.
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_stack_size(64 << 20)
            .thread_name("wisp-cluster")
            .build()?
            .block_on(serve(a))
    })
    .await?
}

async fn serve(a: ClusterArgs) -> anyhow::Result<i32> {
    match a.role {
        Role::Scheduler(s) => {
            let functions = crate::cluster::Functions::load(&s.functions.udf_config()?)?;
            let settings = crate::cluster::SchedulerSettings {
                bind: s.bind,
                external_host: s.external_host.unwrap_or_else(|| advertised(s.bind.ip()).unwrap_or("localhost".into())),
                executor_timeout_secs: s.executor_timeout_secs.max(1),
            };
            crate::cluster::scheduler(settings, functions).await?;
        }
        Role::Executor(e) => {
            let functions = crate::cluster::Functions::load(&e.functions.udf_config()?)?;
            let (host, port) = e
                .scheduler
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| anyhow::anyhow!("--scheduler '{}': expected HOST:PORT", e.scheduler))?;
            let settings = crate::cluster::ExecutorSettings {
                bind: e.bind,
                grpc_port: e.grpc_port,
                external_host: e.external_host.or_else(|| advertised(e.bind.ip())),
                scheduler_host: host,
                scheduler_port: port,
                concurrent_tasks: e
                    .concurrent_tasks
                    .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
                memory_limit: e.memory_mb << 20,
                work_dir: e.work_dir,
                heartbeat_secs: e.heartbeat_secs,
            };
            crate::cluster::executor(settings, functions).await?;
        }
    }
    Ok(EXIT_OK)
}

/// The address others reach a process by when it binds `ip` and no `--external-host` is given:
/// `ip` itself, unless it is the unspecified address (then Ballista's default, the host name).
fn advertised(ip: std::net::IpAddr) -> Option<String> {
    (!ip.is_unspecified()).then(|| ip.to_string())
}
