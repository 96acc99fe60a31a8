//! `--sweep`: the same rows at each of a list of concurrencies or bcrypt costs, written to --csv
//! for scripts/plot_benchmarks.py, where the scenario table shows one setting.

use std::sync::Arc;

use super::{
    Args,
    passwords::{BcryptLimit, login_load, signup_load},
    runner::{Report, histogram, print_header, run},
    server::{Server, channels},
    tokens::{mint_tokens, start_echo, validate_load},
};

pub(super) async fn sweep(args: &Args, sweep: &str) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    print_header();
    match sweep {
        "concurrency" => {
            let server = Server::start(args, args.cost).await;
            println!(
                "# sweep over concurrency: {cores} cores, bcrypt cost {}, hash queue {}",
                args.cost,
                server.identity.hasher_queue_capacity()
            );
            let channels = Arc::new(channels(server.addr, args.connections).await);
            let echo = Arc::new(start_echo(&server.identity, args.connections).await);
            let repeated = Arc::new(mint_tokens(&server.identity, 1));
            let identity = Arc::clone(&server.identity);
            let fresh =
                Arc::new(tokio::task::spawn_blocking(move || mint_tokens(&identity, 100_000)).await.unwrap());
            let users = Arc::new(server.users(8).await);
            for &concurrency in &args.concurrencies {
                for (name, load) in [
                    ("echo", validate_load(Arc::clone(&echo), &repeated)),
                    ("ValidateToken repeated", validate_load(Arc::clone(&channels), &repeated)),
                    ("ValidateToken new tokens", validate_load(Arc::clone(&channels), &fresh)),
                ] {
                    let report = run(name, concurrency, args.duration, load).await;
                    report.print();
                    write_csv(&args.csv, sweep, args.cost, &report);
                }
                let report = run(
                    "Login",
                    concurrency,
                    args.duration,
                    login_load(Arc::clone(&channels), Arc::clone(&users)),
                )
                .await;
                report.print();
                write_csv(&args.csv, sweep, args.cost, &report);
            }
        }
        "cost" => {
            for &cost in &args.costs {
                let server = Server::start(args, cost).await;
                let channels = Arc::new(channels(server.addr, args.connections).await);
                let users = Arc::new(server.users(8).await);
                let limit = BcryptLimit::measure(cost, cores).logins_per_second;
                println!(
                    "# cost {cost}: bcrypt limit {limit:.1} logins/s on {cores} cores, hash queue {}",
                    server.identity.hasher_queue_capacity()
                );
                let report = run(
                    "Login",
                    args.login_concurrency,
                    args.duration,
                    login_load(Arc::clone(&channels), users),
                )
                .await;
                report.print();
                write_csv(&args.csv, sweep, cost, &report);
                let report =
                    run("Signup", args.login_concurrency, args.duration, signup_load(Arc::clone(&channels)))
                        .await;
                report.print();
                write_csv(&args.csv, sweep, cost, &report);
                let limit_report = Report {
                    name: "bcrypt limit".into(),
                    concurrency: cores,
                    ok: (limit * args.duration.as_secs_f64()) as u64,
                    shed: 0,
                    errors: 0,
                    elapsed: args.duration,
                    latency: histogram(),
                };
                write_csv(&args.csv, sweep, cost, &limit_report);
            }
        }
        other => panic!("unknown sweep {other:?}: concurrency or cost"),
    }
}

fn write_csv(path: &Option<std::path::PathBuf>, sweep: &str, cost: u32, report: &Report) {
    let Some(path) = path else { return };
    use std::io::Write;
    let new = !path.exists();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open csv");
    if new {
        writeln!(file, "sweep,scenario,cost,concurrency,ok,shed,errors,rps,p50_ms,p90_ms,p99_ms,max_ms")
            .expect("csv");
    }
    let ms = |q: f64| report.latency.value_at_quantile(q) as f64 / 1000.0;
    writeln!(
        file,
        "{sweep},{},{cost},{},{},{},{},{:.1},{:.3},{:.3},{:.3},{:.3}",
        report.name.trim(),
        report.concurrency,
        report.ok,
        report.shed,
        report.errors,
        report.rps(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        report.latency.max() as f64 / 1000.0
    )
    .expect("csv");
}
