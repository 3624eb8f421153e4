//! `ideaflow verify`: after a replay, checks that Postgres, Redis and the
//! in-memory final state agree exactly: the same idea set, the same top K per
//! category, scores equal to 1e-6.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use ideaflow_operators::views::{IdeaStatus, ViewState};
use redis::Commands;

use crate::cli::VerifyArgs;
use crate::config::Config;

/// One idea as every store should show it.
#[derive(Clone, Debug, PartialEq)]
struct Expected {
    category: Option<String>,
    active: bool,
    score: Option<f64>,
}

/// An idea as Postgres holds it: id, category, status, score.
type IdeaRead = (String, Option<String>, String, Option<f64>);

pub fn run(args: VerifyArgs) -> Result<()> {
    let mut config = Config::load(&args.config)?;
    if let Some(ns) = &args.namespace {
        config.set_namespace(ns)?;
    }
    // Without --out or --input: what the last `replay --materialize` into
    // this namespace recorded (its --out if still there, else its inputs).
    let (mut out, mut inputs) = (args.out.clone(), args.input.clone());
    if out.is_none() && inputs.is_empty() {
        if let Some((recorded_out, recorded_inputs)) = recorded_replay(&config)? {
            if recorded_out.join("ideas.jsonl").exists() {
                out = Some(recorded_out);
            } else {
                inputs = recorded_inputs;
            }
        }
    }
    let expected = match &out {
        Some(dir) => from_out_dir(dir)?,
        None => {
            let inputs = if inputs.is_empty() {
                file_inputs(&config)?
            } else {
                inputs
            };
            let views = Arc::new(Mutex::new(ViewState::default()));
            super::replay::replay_into(&config, None, inputs, None, views.clone(), false)?;
            let views = views.lock().expect("not poisoned");
            from_views(&views)
        }
    };
    let mut problems: Vec<String> = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Postgres: the ideas and their scores; and the vector index's table,
    // which must hold each idea's vector once the run has ended.
    let (rows, unindexed): (Vec<IdeaRead>, i64) = runtime.block_on(async {
        let pool = ideaflow_sinks::postgres::connect(&config.postgres.url, &config.postgres.schema)
            .await?;
        let rows = sqlx::query_as("SELECT id::text, category, status, score FROM ideas")
            .fetch_all(&pool)
            .await
            .context("reading ideas: run `ideaflow replay --materialize` first")?;
        let (unindexed,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM idea_rows r FULL JOIN idea_vectors v ON v.idea_id = r.id \
                 WHERE r.id IS NULL OR v.idea_id IS NULL OR r.embedding <> v.embedding",
        )
        .fetch_one(&pool)
        .await
        .context("reading the vector index's table")?;
        anyhow::Ok((rows, unindexed))
    })?;
    if unindexed > 0 {
        problems.push(format!(
            "Postgres: {unindexed} ideas' vectors are missing from idea_vectors, extra or different \
             (the HNSW index's table; the next `ideaflow run` indexes what is missing)"
        ));
    }
    let in_pg: BTreeMap<String, Expected> = rows
        .into_iter()
        .map(|(id, category, status, score)| {
            (
                id,
                Expected {
                    category,
                    active: status == "active",
                    score,
                },
            )
        })
        .collect();
    compare("Postgres", &expected, &in_pg, &mut problems);
    // Redis: every idea hash's score, and each category's top K.
    let client = redis::Client::open(config.redis.url.as_str())?;
    let mut conn = client
        .get_connection()
        .context("connecting to Redis: is it running? scripts/setup.sh starts it")?;
    let ns = &config.redis.namespace;
    let mut in_redis: BTreeMap<String, Expected> = BTreeMap::new();
    for id in expected.keys() {
        let fields: BTreeMap<String, String> = conn.hgetall(format!("{ns}:idea:{id}"))?;
        if fields.is_empty() {
            continue;
        }
        in_redis.insert(
            id.clone(),
            Expected {
                category: fields.get("category").filter(|c| !c.is_empty()).cloned(),
                active: fields.get("status").map(String::as_str) == Some("active"),
                score: fields.get("score").and_then(|s| s.parse().ok()),
            },
        );
    }
    let extra: Vec<String> = conn
        .scan_match::<_, String>(format!("{ns}:idea:*"))?
        .collect();
    let extra: Vec<String> = extra
        .into_iter()
        .filter(|k| k.matches(':').count() == 2)
        .collect();
    if extra.len() != in_redis.len() {
        problems.push(format!(
            "Redis holds {} idea hashes, the final state {} ideas",
            extra.len(),
            expected.len()
        ));
    }
    compare("Redis", &expected, &in_redis, &mut problems);
    let k = config.redis.top_k;
    let mut categories = 0;
    for (category, top) in top_k(&expected, k) {
        categories += 1;
        let got: Vec<(String, f64)> =
            conn.zrevrange_withscores(format!("{ns}:top:{category}"), 0, -1)?;
        let got_ids: BTreeSet<&String> = got.iter().map(|(id, _)| id).collect();
        let want_ids: BTreeSet<&String> = top.iter().map(|(id, _)| id).collect();
        if got_ids != want_ids {
            problems.push(format!(
                "Redis top {k} of {category}: {} members differ",
                got_ids.symmetric_difference(&want_ids).count()
            ));
        }
    }
    let n = expected.len();
    if problems.is_empty() {
        println!(
            "verify: OK: {n} ideas and the top {k} of {categories} categories agree in Postgres ({}), Redis ({}) and the final state",
            config.postgres.schema, ns
        );
        return Ok(());
    }
    for p in problems.iter().take(20) {
        eprintln!("verify: {p}");
    }
    // The usual cause: the final state is not the one that was materialized.
    let last = match recorded_replay(&config) {
        Ok(Some((out, _))) => format!(
            "; the last `replay --materialize` here wrote {}",
            out.display()
        ),
        _ => String::new(),
    };
    bail!(
        "{} disagreement(s) between Postgres, Redis and the final state of {n} ideas. \
         Postgres schema {} and Redis namespace {ns} hold what the last `ideaflow run` or \
         `ideaflow replay --materialize` wrote there{last}; a replay without --materialize \
         leaves them as they were: replay the stream with --materialize, then verify again",
        problems.len(),
        config.postgres.schema,
    )
}

fn recorded_replay(
    config: &Config,
) -> Result<Option<(std::path::PathBuf, Vec<std::path::PathBuf>)>> {
    let client = redis::Client::open(config.redis.url.as_str())?;
    let mut conn = client
        .get_connection()
        .context("connecting to Redis: is it running? scripts/setup.sh starts it")?;
    let record: Option<String> = conn.get(super::replay::replay_record_key(config))?;
    let Some(record) = record else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(&record)?;
    let out = std::path::PathBuf::from(v["out"].as_str().unwrap_or_default());
    let inputs = v["inputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(std::path::PathBuf::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some((out, inputs)))
}

fn from_views(views: &ViewState) -> BTreeMap<String, Expected> {
    views
        .ideas()
        .map(|i| {
            (
                i.id.to_string(),
                Expected {
                    category: i.category.as_deref().map(str::to_owned),
                    active: i.status == IdeaStatus::Active,
                    score: views.score(i.id).map(|s| s.score),
                },
            )
        })
        .collect()
}

fn from_out_dir(dir: &std::path::Path) -> Result<BTreeMap<String, Expected>> {
    let path = dir.join("ideas.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: pass the --out folder of `ideaflow replay`",
            path.display()
        )
    })?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        out.insert(
            v["id"].as_str().unwrap_or_default().to_owned(),
            Expected {
                category: v["category"].as_str().map(str::to_owned),
                active: v["status"] == "active",
                score: v["score"].as_f64(),
            },
        );
    }
    Ok(out)
}

fn compare(
    store: &str,
    expected: &BTreeMap<String, Expected>,
    got: &BTreeMap<String, Expected>,
    problems: &mut Vec<String>,
) {
    for (id, want) in expected {
        match got.get(id) {
            None => problems.push(format!("{store} lacks idea {id}")),
            Some(have) => {
                let scores_agree = match (want.score, have.score) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-6,
                    (None, None) => true,
                    _ => false,
                };
                if !scores_agree || have.category != want.category || have.active != want.active {
                    problems.push(format!("{store} idea {id}: {have:?}, expected {want:?}"));
                }
            }
        }
    }
    for id in got.keys().filter(|id| !expected.contains_key(*id)) {
        problems.push(format!(
            "{store} has idea {id}, which the final state does not"
        ));
    }
}

/// Each category's top K active ideas: score descending, then id.
fn top_k(expected: &BTreeMap<String, Expected>, k: usize) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut by: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for (id, e) in expected {
        if let (Some(c), Some(s), true) = (&e.category, e.score, e.active) {
            by.entry(c.clone()).or_default().push((id.clone(), s));
        }
    }
    for v in by.values_mut() {
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(k);
    }
    by
}

/// `pipeline.inputs` as files to replay in memory; a bus cannot be read
/// again here, so it is refused with what to do instead.
fn file_inputs(config: &Config) -> Result<Vec<std::path::PathBuf>> {
    config
        .input_specs()?
        .into_iter()
        .map(|spec| match spec {
            ideaflow_sources::input::InputSpec::File(p) => Ok(p),
            bus => Err(anyhow::anyhow!(
                "pipeline.inputs names the bus {bus}, which verify cannot read again: pass --out DIR of a replay of the same records, or --input FILE"
            )),
        })
        .collect()
}
