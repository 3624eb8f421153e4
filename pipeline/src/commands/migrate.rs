//! `ideaflow migrate`: creates the namespace's schema and applies the
//! migrations (also done at the start of `run` and `replay --materialize`).

use anyhow::Result;
use ideaflow_sinks::postgres;

use crate::cli::MigrateArgs;
use crate::config::Config;

pub fn run(args: MigrateArgs) -> Result<()> {
    let mut config = Config::load(&args.config)?;
    if let Some(ns) = &args.namespace {
        config.set_namespace(ns)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pool = postgres::connect(&config.postgres.url, &config.postgres.schema).await?;
        postgres::migrate(&pool).await?;
        let applied: Vec<(i64, String)> =
            sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&pool)
                .await?;
        for (v, d) in applied {
            println!("applied {v} {d}");
        }
        println!("schema {} is up to date", config.postgres.schema);
        anyhow::Ok(())
    })
}
