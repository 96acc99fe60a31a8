//! `identity import` and `identity export`: the CLI side of moving accounts in and out. Records
//! are read one at a time (from an old app's Postgres table or a JSON Lines file), parsed into
//! domain types, and written in batches through [`AccountTransfer`], one transaction each; no
//! password is hashed (imported hashes are checked as they are and replaced at each owner's
//! next login). A progress bar shows on a terminal; the summary goes to standard output and
//! each record not imported to standard error.

mod jsonl;
mod postgres;

use std::{
    io::{BufRead, BufWriter, IsTerminal, Write},
    path::{Path, PathBuf},
};

use chrono::Utc;

pub use self::jsonl::Line;
use self::postgres::{Columns, Source, SourceError};
use crate::{
    cli::CliError,
    clock::Clock,
    config::Config,
    service::AccountTransfer,
    startup::connect_and_migrate,
    store::{CollisionKind, ImportMode, ImportOutcome, ImportedUser, PageCursor},
};

/// Records written per transaction.
const BATCH: usize = 500;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Read an old app's users table from this Postgres database (defaults: the FastAPI
    /// tutorial's `users` table; see the column options).
    #[arg(long, value_name = "URL", conflicts_with = "from_jsonl", required_unless_present = "from_jsonl")]
    from_postgres: Option<String>,
    /// Read JSON Lines (the format `identity export` writes; see docs/migrating.md).
    #[arg(long, value_name = "FILE")]
    from_jsonl: Option<PathBuf>,
    #[command(flatten)]
    columns: Columns,
    /// Honour the source's active column (the tutorial's defaults to false and its login never
    /// reads it, so by default every user is imported as active).
    #[arg(long)]
    keep_inactive: bool,
    /// Bring accounts imported before up to date (name, active flag, and the hash while it is
    /// still an imported one) instead of skipping them.
    #[arg(long)]
    update: bool,
    /// Report what would happen; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Where to write the mapping from old id to new user id (CSV, mode 0600; not in a dry run).
    #[arg(long, value_name = "FILE", default_value = "identity-import-mapping.csv")]
    mapping: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The file to write (created, mode 0600; never over an existing file).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Include the password hashes (without, the accounts import without passwords).
    #[arg(long)]
    include_password_hashes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Cli(#[from] CliError),
}

impl From<crate::error::AppError> for TransferError {
    fn from(error: crate::error::AppError) -> Self {
        Self::Cli(CliError::Service(error))
    }
}

/// Creates `path` for writing, mode 0600: truncated if `replace`, else only if it is new.
fn private_file(path: &Path, replace: bool) -> Result<BufWriter<std::fs::File>, CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(|source| CliError::Write { path: path.to_owned(), source })?;
    // A file that existed keeps its mode through a truncate: tighten it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|source| CliError::Write { path: path.to_owned(), source })?;
    }
    Ok(BufWriter::new(file))
}

/// What an import did, for the summary.
#[derive(Debug, Default)]
struct Tally {
    read: u64,
    imported: u64,
    skipped: u64,
    updated: u64,
    collisions: u64,
    invalid: u64,
    inactive_in_source: u64,
}

/// One import run: the batch being filled, the tally, the mapping file, the progress bar.
struct Run {
    transfer: AccountTransfer,
    mode: ImportMode,
    /// (line number, external id, email) of each record in `batch`.
    pending: Vec<(u64, Option<String>, String)>,
    batch: Vec<ImportedUser>,
    tally: Tally,
    /// `None` in a dry run: its ids are never stored.
    mapping: Option<BufWriter<std::fs::File>>,
    mapping_path: PathBuf,
    progress: indicatif::ProgressBar,
}

impl Run {
    async fn add(&mut self, line: Line, inactive_in_source: bool) -> Result<(), TransferError> {
        self.tally.read += 1;
        self.tally.inactive_in_source += u64::from(inactive_in_source);
        let number = self.tally.read;
        let label = (line.external_id.clone(), line.email.clone());
        match line.parse(Utc::now()) {
            Ok(user) => {
                self.pending.push((number, label.0, label.1));
                self.batch.push(user);
                if self.batch.len() >= BATCH {
                    self.flush().await?;
                }
            }
            Err(why) => {
                self.tally.invalid += 1;
                self.progress
                    .suspend(|| eprintln!("record {number}{}: not imported: {why}", id_note(&label.0)));
            }
        }
        self.progress.inc(1);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransferError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let outcomes = self.transfer.import(&self.batch, self.mode).await?;
        for ((number, external_id, email), outcome) in self.pending.drain(..).zip(outcomes) {
            let user_id = match outcome {
                ImportOutcome::Imported(id) => {
                    self.tally.imported += 1;
                    id
                }
                ImportOutcome::Existing { user_id, updated } => {
                    if updated {
                        self.tally.updated += 1;
                    } else {
                        self.tally.skipped += 1;
                    }
                    user_id
                }
                ImportOutcome::Collision { with, kind } => {
                    self.tally.collisions += 1;
                    let how = match kind {
                        CollisionKind::SameEmail => "has the same email (ignoring case) as",
                        CollisionKind::LookAlike => "has an email that looks like that of",
                    };
                    self.progress.suspend(|| {
                        eprintln!(
                            "record {number}{} ({email}): not imported: {how} account {with}",
                            id_note(&external_id)
                        )
                    });
                    continue;
                }
            };
            if let (Some(mapping), Some(external_id)) = (&mut self.mapping, external_id) {
                writeln!(mapping, "{},{user_id}", csv_field(&external_id))
                    .map_err(|source| CliError::Write { path: self.mapping_path.clone(), source })?;
            }
        }
        self.batch.clear();
        Ok(())
    }

    fn summary(&self, source: &str, preset_activated: bool) -> String {
        let t = &self.tally;
        let mut out = format!(
            "{verb} from {source}: {read} records read, {imported} imported, {skipped} already imported (skipped), \
             {updated} updated, {collisions} email collisions (not imported), {invalid} invalid (not imported)\n",
            verb = if self.mode.dry_run { "dry run (nothing written)" } else { "import" },
            read = t.read,
            imported = t.imported,
            skipped = t.skipped,
            updated = t.updated,
            collisions = t.collisions,
            invalid = t.invalid,
        );
        if preset_activated && t.inactive_in_source > 0 {
            out += &format!(
                "{} users marked inactive in the source were imported as active (the tutorial app never \
                 reads is_active); --keep-inactive keeps them inactive\n",
                t.inactive_in_source
            );
        }
        if self.mapping.is_some() {
            out += &format!("mapping of old ids to user ids: {}\n", self.mapping_path.display());
        }
        out
    }
}

fn id_note(external_id: &Option<String>) -> String {
    external_id.as_ref().map(|id| format!(" (old id {id})")).unwrap_or_default()
}

/// A CSV field, quoted when it needs to be.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn progress_bar(length: Option<u64>) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match length {
        Some(length) => indicatif::ProgressBar::new(length),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(if length.is_some() { style } else { indicatif::ProgressStyle::default_spinner() });
    bar
}

/// `identity import`: prints the summary and returns it.
pub async fn import(config: &Config, args: ImportArgs) -> Result<String, TransferError> {
    let mode = ImportMode { update: args.update, dry_run: args.dry_run };
    // Open the source before touching the target, so a wrong URL or file writes nothing.
    enum Opened {
        Postgres(Source, u64),
        Jsonl(std::io::BufReader<std::fs::File>),
    }
    let opened = match (&args.from_postgres, &args.from_jsonl) {
        (Some(url), _) => {
            let mut source = Source::connect(url, &args.columns, args.keep_inactive).await?;
            let count = source.count(&args.columns).await?;
            Opened::Postgres(source, count)
        }
        (None, Some(path)) => Opened::Jsonl(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|source| TransferError::Read { path: path.clone(), source })?,
        )),
        (None, None) => {
            return Err(
                CliError::InvalidArgument("--from-postgres or --from-jsonl is required".into()).into()
            );
        }
    };
    let store = connect_and_migrate(config).await.map_err(CliError::from)?;
    let mut run = Run {
        transfer: AccountTransfer::new(store.clone(), Clock::system()),
        mode,
        pending: Vec::with_capacity(BATCH),
        batch: Vec::with_capacity(BATCH),
        tally: Tally::default(),
        mapping: if args.dry_run { None } else { Some(private_file(&args.mapping, true)?) },
        mapping_path: args.mapping.clone(),
        progress: progress_bar(match &opened {
            Opened::Postgres(_, count) => Some(*count),
            Opened::Jsonl(_) => None,
        }),
    };
    let outcome = async {
        match opened {
            Opened::Postgres(source, _) => {
                source.for_each(async |line, inactive| run.add(line, inactive).await).await?;
            }
            Opened::Jsonl(reader) => {
                let path = args.from_jsonl.clone().unwrap_or_default();
                for (number, text) in reader.lines().enumerate() {
                    let text = text.map_err(|source| TransferError::Read { path: path.clone(), source })?;
                    if text.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Line>(&text) {
                        Ok(line) => run.add(line, false).await?,
                        Err(error) => {
                            run.tally.read += 1;
                            run.tally.invalid += 1;
                            // serde's message names the field and position, never the value.
                            run.progress.suspend(|| {
                                eprintln!(
                                    "line {}: not imported: {}",
                                    number + 1,
                                    error_without_value(&error)
                                )
                            });
                        }
                    }
                }
            }
        }
        run.flush().await?;
        if let Some(mapping) = &mut run.mapping {
            mapping.flush().map_err(|source| CliError::Write { path: run.mapping_path.clone(), source })?;
        }
        Ok::<_, TransferError>(())
    }
    .await;
    run.progress.finish_and_clear();
    store.close().await;
    outcome?;
    let source = match (&args.from_postgres, &args.from_jsonl) {
        (Some(_), _) => format!("Postgres table {}", args.columns.table),
        (None, path) => path.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
    };
    let summary = run.summary(&source, args.from_postgres.is_some() && !args.keep_inactive);
    print!("{summary}");
    Ok(summary)
}

/// serde_json's error category and position, without the text it quotes from the input.
fn error_without_value(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not valid JSON",
        serde_json::error::Category::Data => {
            let text = error.to_string();
            return text.split(" at line").next().map_or(text.clone(), |head| {
                if head.contains("unknown field") || head.contains("missing field") {
                    head.split(", expected").next().unwrap_or(head).to_owned()
                } else {
                    "a field has the wrong type".to_owned()
                }
            });
        }
        serde_json::error::Category::Io => "unreadable",
    };
    format!("{what} (column {})", error.column())
}

/// `identity export`: every account, oldest first, one JSON line each; returns how many.
pub async fn export(config: &Config, args: ExportArgs) -> Result<u64, TransferError> {
    let mut out = private_file(&args.out, false)?;
    let store = connect_and_migrate(config).await.map_err(CliError::from)?;
    let transfer = AccountTransfer::new(store.clone(), Clock::system());
    let write_error = |source| CliError::Write { path: args.out.clone(), source };
    let outcome = async {
        let mut after: Option<PageCursor> = None;
        let mut written = 0;
        loop {
            let page = transfer.export_page(after, args.include_password_hashes).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.user.created_at, last.user.id.into_uuid()));
            for user in &page {
                let line = serde_json::to_string(&Line::export(user))
                    .map_err(|e| write_error(std::io::Error::other(e)))?;
                writeln!(out, "{line}").map_err(write_error)?;
                written += 1;
            }
        }
        out.flush().map_err(write_error)?;
        Ok::<_, TransferError>(written)
    }
    .await;
    store.close().await;
    let written = outcome?;
    tracing::info!(target: "audit", event = "users_exported", accounts = written,
        with_hashes = args.include_password_hashes);
    println!("{written} accounts written to {}", args.out.display());
    Ok(written)
}

/// `identity user hash-schemes`: stored hashes per scheme, and which of them the next login of
/// their owner replaces.
pub async fn hash_schemes(config: &Config) -> Result<(), TransferError> {
    let store = connect_and_migrate(config).await.map_err(CliError::from)?;
    let counts = AccountTransfer::new(store.clone(), Clock::system()).hash_schemes().await;
    store.close().await;
    println!("SCHEME\tCOST\tACCOUNTS\tREPLACED AT NEXT LOGIN");
    for count in counts? {
        let cost = count.cost.map_or_else(|| "-".to_owned(), |cost| cost.to_string());
        let replaced = match (count.scheme.as_str(), count.cost) {
            ("bcrypt", Some(cost)) if cost >= config.bcrypt_cost => "no",
            ("none", _) => "no (no password: reset)",
            _ => "yes",
        };
        println!("{}\t{cost}\t{}\t{replaced}", count.scheme, count.accounts);
    }
    Ok(())
}
