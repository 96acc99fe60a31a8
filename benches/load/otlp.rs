//! `--scenarios otlp`: what exporting traces costs. Two servers on the same settings, one without
//! an endpoint and one exporting every span to an OTLP receiver in this process (the tests'
//! receiver: a real TraceService), each driven with ValidateToken (one repeated token) and
//! Login in alternating rounds, so that drift on a shared machine hits both alike. Prints each
//! run, then the ratios traced / plain of the medians.

use std::sync::Arc;

#[allow(dead_code)]
#[path = "../../tests/api/otlp.rs"]
mod receiver;

use super::{
    Args,
    passwords::login_load,
    runner::{BoxedCall, median, run},
    server::{Server, channels},
    tokens::{mint_tokens, validate_load},
};

pub(super) async fn otlp(args: &Args) {
    let receiver = receiver::OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let (plain_dir, traced_dir) =
        (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let plain = Server::start_in(args, args.cost, &plain_dir, &[]).await;
    let traced =
        Server::start_in(args, args.cost, &traced_dir, &[("IDENTITY_OTLP_ENDPOINT", &endpoint)]).await;
    let mut loads = Vec::new();
    for (label, server) in [("plain", &plain), ("traced", &traced)] {
        let users = Arc::new(server.users(8).await);
        let channels = Arc::new(channels(server.addr, args.connections).await);
        let token = mint_tokens(&server.identity, 1);
        loads.push((label, users, channels, token));
    }
    // [plain, traced] requests/s per round.
    let (mut validate, mut login): ([Vec<f64>; 2], [Vec<f64>; 2]) = Default::default();
    for _ in 0..args.rounds.max(1) {
        for (index, (label, users, channels, token)) in loads.iter().enumerate() {
            let load = validate_load(Arc::clone(channels), token);
            validate[index]
                .push(measure(&format!("ValidateToken {label}"), args.concurrency, args, load).await);
            let load = login_load(Arc::clone(channels), Arc::clone(users));
            login[index].push(measure(&format!("Login {label}"), args.login_concurrency, args, load).await);
        }
    }
    for (name, [plain, traced]) in [("ValidateToken", &mut validate), ("Login", &mut login)] {
        if let (Some(plain), Some(traced)) = (median(plain), median(traced)) {
            println!(
                "ratio {name} traced / plain: {:.2} (medians of {} rounds: {traced:.0} / {plain:.0} requests/s)",
                traced / plain,
                args.rounds.max(1)
            );
        }
    }
    // The last batch may still be on its way: this is a floor.
    println!("spans received by the OTLP receiver: {}", receiver.spans().len());
}

/// Runs `load` for `--duration`, prints the run and returns its requests per second.
async fn measure(
    name: &str,
    concurrency: usize,
    args: &Args,
    load: impl Fn(usize, u64) -> BoxedCall + Send + Sync + 'static,
) -> f64 {
    let report = run(name, concurrency, args.duration, load).await;
    report.print();
    report.rps()
}
