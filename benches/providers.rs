//! Benchmark: messages per second from one process to the provider simulator
//! (a separate `meridian simulate` process) over TLS HTTP/2, per provider, at
//! 64, 256 and 1024 requests in flight, with the CPU seconds (user + system)
//! each process spent per run: throughput here is noisy on a shared 2-core
//! machine, CPU per message much less so.
//!
//!     cargo bench --bench providers -- [--messages N] [--connections C]

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use meridian::clock::SystemClock;
use meridian::domain::campaign::{Message, Platform};
use meridian::domain::ids::DeliveryId;
use meridian::provider::app::{AppProviders, Push};

// The tests' simulator helper; this bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/common/sim.rs"]
mod sim;

/// glibc malloc spends a fifth of the send path in contention and consolidation.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU seconds (user + system) a process has used so far, from `/proc` (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks as f64 / 100.0)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let messages: usize = arg("--messages")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let connections: usize = arg("--connections")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let sim = sim::SimProcess::start(0);
    let message = Message {
        title: "Benchmark".into(),
        body: "A message of ordinary length for a push notification.".into(),
        ..Message::default()
    };
    let ios_tokens: Vec<String> = (0..messages).map(|i| format!("{i:064x}")).collect();
    let android_tokens: Vec<String> = (0..messages).map(|i| format!("android-{i}")).collect();
    println!("meridian bench: {messages} messages per run, {connections} HTTP/2 connections, simulator in its own process");
    for (name, platform, tokens) in [
        ("apns", Platform::Ios, &ios_tokens),
        ("fcm", Platform::Android, &android_tokens),
    ] {
        for concurrency in [64usize, 256, 1024] {
            let cfg = sim.config(
                "",
                &format!("connections = {connections}\nconcurrency = {concurrency}"),
                "",
            );
            let providers = Arc::new(
                AppProviders::from_config("shop", &cfg.apps["shop"], Arc::new(SystemClock))
                    .unwrap(),
            );
            // Warm up: connections and (FCM) the access token.
            for t in tokens.iter().take(100) {
                let push = Push {
                    delivery_id: DeliveryId::new(1),
                    platform,
                    token: t,
                    locale: None,
                    message: &message,
                    collapse_key: None,
                    expires_at: None,
                };
                assert!(providers.send(&push).await.is_accepted());
            }
            let cpu_before = (cpu_seconds(std::process::id()), cpu_seconds(sim.pid()));
            let start = Instant::now();
            let accepted = futures::stream::iter(tokens.iter().enumerate())
                .map(|(i, t)| {
                    let providers = providers.clone();
                    let message = &message;
                    async move {
                        let push = Push {
                            delivery_id: DeliveryId::new(i as i64),
                            platform,
                            token: t,
                            locale: None,
                            message,
                            collapse_key: Some("bench"),
                            expires_at: None,
                        };
                        providers.send(&push).await.is_accepted()
                    }
                })
                .buffer_unordered(concurrency)
                .filter(|ok| futures::future::ready(*ok))
                .count()
                .await;
            let secs = start.elapsed().as_secs_f64();
            let cpu = |before: Option<f64>, pid: u32| match (before, cpu_seconds(pid)) {
                (Some(b), Some(a)) => format!("{:.2} s", a - b),
                _ => "?".to_owned(),
            };
            println!(
                "{name:<5} concurrency {concurrency:>5}: {accepted} accepted in {secs:.2} s = {:.0} msgs/s; CPU client {}, simulator {}",
                accepted as f64 / secs,
                cpu(cpu_before.0, std::process::id()),
                cpu(cpu_before.1, sim.pid()),
            );
            assert_eq!(accepted, messages);
        }
    }
}
