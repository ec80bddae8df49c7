//! `meridian simulate`: the provider simulator as a process of its own.

use std::path::PathBuf;

use anyhow::Context;
use meridian::config::Config;

use super::demo::shutdown_signal;
use super::Failure;

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// TLS (HTTP/2 and HTTP/1.1) listener.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// Plaintext listener (h2c with prior knowledge, and HTTP/1.1).
    #[arg(long)]
    listen_h2c: Option<std::net::SocketAddr>,
    /// Where to write the CA certificate that clients should trust (`ca_file`).
    #[arg(long, default_value = "data/simulator-ca.pem")]
    ca_out: PathBuf,
    /// Device tokens starting with this are unregistered.
    #[arg(long, default_value = "dead")]
    unregistered_prefix: String,
    /// Fraction of sends answered 503 (0..1).
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Added latency per send, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

pub async fn simulate(config: &Config, args: SimulateArgs) -> Result<(), Failure> {
    use meridian::simulator::{Behaviour, Simulator, SimulatorConfig};
    if !(0.0..=1.0).contains(&args.fail_rate) {
        return Err(Failure::Input(
            "--fail-rate: must be between 0 and 1".to_owned(),
        ));
    }
    let mut sim_config =
        SimulatorConfig::trusting(config).map_err(|e| Failure::Input(e.to_string()))?;
    sim_config.tls_addr = Some(args.listen);
    sim_config.plain_addr = args.listen_h2c;
    sim_config.behaviour = Behaviour {
        unregistered_prefix: Some(args.unregistered_prefix).filter(|p| !p.is_empty()),
        fail_rate: args.fail_rate,
        latency_ms: args.latency_ms,
        ..Behaviour::default()
    };
    let sim = Simulator::start(sim_config).await?;
    if let Some(dir) = args.ca_out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.ca_out, &sim.ca_pem)
        .with_context(|| format!("writing {}", args.ca_out.display()))?;
    if let Some(url) = sim.tls_url() {
        out!(
            "simulator: APNs and FCM at {url} (trust {}), OAuth token endpoint {url}/token",
            args.ca_out.display()
        );
    }
    if let Some(url) = sim.plain_url() {
        out!("simulator: plaintext (h2c) at {url}");
    }
    out!("simulator: stats at GET /_sim/stats, behaviour at PUT /_sim/behaviour; ready");
    shutdown_signal().await;
    Ok(())
}
