//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`: the contract.
//! Every operation has an `operationId` and tags, every parameter the bounds
//! the server enforces (from the config it runs with), every status it can
//! answer with its body's schema. `tests/api_contract.rs` checks it against
//! the running server both ways (schemathesis).

use serde_json::{json, Map, Value};

/// The bounds the server enforces, as configured.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_limit: usize,
    pub max_query_chars: usize,
}

fn error_ref() -> Value {
    json!({"$ref": "#/components/responses/Error"})
}

/// Statuses any request can get before a handler runs: a malformed request
/// (400), a URI over hyper's limit (413), headers too large (431).
fn protocol_errors(responses: &mut Map<String, Value>) {
    for status in ["400", "413", "431"] {
        responses.insert(status.into(), error_ref());
    }
}

/// A JSON 200 answer with `schema`.
fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": schema}}})
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A GET operation: its id, tag, summary, parameters, 200 answer, and the
/// error statuses it can give besides the protocol's.
fn get(id: &str, tag: &str, summary: &str, params: Value, ok: Value, errors: &[&str]) -> Value {
    let mut responses = Map::new();
    responses.insert("200".into(), ok);
    protocol_errors(&mut responses);
    for status in errors {
        responses.insert((*status).into(), error_ref());
    }
    json!({"get": {
        "operationId": id,
        "tags": [tag],
        "summary": summary,
        "parameters": params,
        "responses": responses
    }})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// `POST /api/v1/signals`: webhook ingest (docs/live-operation.md).
fn webhook() -> Value {
    let error = error_ref();
    let retry = json!({"description": "The error envelope; Retry-After says when to try again",
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        "content": {"application/json": {"schema": schema("Error")}}});
    let record = json!({"type": "object", "description": "A Signal or an event envelope (README, Signals and events)"});
    let mut responses = Map::new();
    responses.insert("202".into(), json!({"description": "Accepted: every valid record is on the bus",
        "content": {"application/json": {"schema": {"type": "object",
            "required": ["accepted", "rejected", "bus", "positions"],
            "properties": {
                "accepted": {"type": "array", "items": {"type": "string"}, "description": "eventId, or source:id"},
                "rejected": {"type": "array", "items": {"type": "object", "required": ["index", "reason", "message"],
                    "properties": {"index": {"type": "integer"}, "reason": {"type": "string"}, "message": {"type": "string"}}}},
                "bus": {"type": "string"},
                "positions": {"type": "array", "items": {"type": "string"}}}}}}}));
    protocol_errors(&mut responses);
    responses.insert("401".into(), json!({"description": "No or wrong bearer token, or the endpoint is off (no token configured)",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": schema("Error")}}}));
    responses.insert("422".into(), error.clone());
    responses.insert("429".into(), retry.clone());
    responses.insert("503".into(), retry);
    json!({"post": {
        "operationId": "postSignals",
        "tags": ["ingest"],
        "summary": "Webhook ingest: one Signal or envelope, a JSON array of them, or NDJSON; valid records are appended to the bus the pipeline reads (api.webhook_bus) before the answer. Off when no token is configured: every request is then 401 `webhook_off`",
        "security": [{"bearer": []}],
        "requestBody": {"required": true, "content": {
            "application/json": {"schema": {"oneOf": [record, {"type": "array", "items": record}]}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one record per line"}}
        }},
        "responses": responses
    }})
}

fn schemas() -> Value {
    let nullable = |t: &str| json!({"type": [t, "null"]});
    let time = json!({"type": ["string", "null"], "format": "date-time"});
    json!({
        "Error": {"type": "object", "required": ["error_code", "message", "timestamp", "details"],
            "properties": {"error_code": {"type": "string"}, "message": {"type": "string"},
                           "timestamp": {"type": "string", "format": "date-time"}, "details": {}}},
        "Factor": {"type": "object", "required": ["factor", "value", "weight", "contribution"],
            "properties": {
                "factor": {"type": "string", "enum": ["freshness", "engagement", "novelty", "community_fit", "seasonality"]},
                "value": nullable("number"), "weight": {"type": "number"},
                "contribution": nullable("number")}},
        "Idea": {"type": "object",
            "required": ["id", "title", "category", "anchor_class", "community", "status", "signal_count",
                         "near_duplicates", "engagement", "first_seen", "last_seen", "score", "scored_at", "factors"],
            "properties": {
                "id": {"type": "string", "format": "uuid"}, "title": {"type": "string"},
                "category": nullable("string"), "anchor_class": nullable("string"),
                "community": nullable("string"), "status": {"type": "string", "enum": ["active", "archived"]},
                "signal_count": {"type": "integer"}, "near_duplicates": {"type": "integer"},
                "engagement": {"type": "integer", "description": "views + likes + comments + shares"},
                "first_seen": time, "last_seen": time, "score": nullable("number"), "scored_at": time,
                "factors": {"type": "array", "items": schema("Factor"),
                    "description": "each factor's value, the weight in force when it was scored, and weight × value"}}},
        "SearchHit": {"allOf": [schema("Idea"),
            {"type": "object", "required": ["similarity"], "properties": {"similarity": {"type": "number"}}}]},
        "Weights": {"type": "object",
            "required": ["freshness", "engagement", "novelty", "community_fit", "seasonality"],
            "properties": {"freshness": {"type": "number"}, "engagement": {"type": "number"},
                "novelty": {"type": "number"}, "community_fit": {"type": "number"},
                "seasonality": {"type": "number"}}},
        "WeightsInForce": {"allOf": [schema("Weights"), {"type": "object", "properties": {
            "effective_from": time, "origin": {"type": "string"},
            "ideas": {"type": "integer"}, "impressions": {"type": "integer"}}}]}
    })
}

pub fn document(bounds: Bounds) -> Value {
    let limit = query(
        "limit",
        &format!("How many (1 to {}, api.max_limit)", bounds.max_limit),
        json!({"type": "integer", "minimum": 1, "maximum": bounds.max_limit, "default": 20}),
    );
    let obj = |required: &[&str], properties: Value| json!({"type": "object", "required": required, "properties": properties});
    let text = |description: &str, media: &str| json!({"description": description, "content": {media: {"schema": {"type": "string"}}}});
    let nullable = |t: &str| json!({"type": [t, "null"]});
    let time = json!({"type": "string", "format": "date-time"});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ideaflow", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Live materialized views of trending ideas: scores, topics, centroids, semantic search. Every error answers in the envelope `Error`."},
        "tags": [
            {"name": "ideas", "description": "Ideas, their scores and explanations"},
            {"name": "views", "description": "Topics, centroids, the heatmap"},
            {"name": "feedback", "description": "Weights learned from feedback, A/B results, anchors"},
            {"name": "live", "description": "Committed epochs as server-sent events"},
            {"name": "ingest", "description": "Webhook ingest"},
            {"name": "ops", "description": "Health, metrics, this document, the dashboard"}
        ],
        "paths": {
            "/api/v1/ideas/top": get("topIdeas", "ideas", "Top active ideas by score, optionally of one category",
                json!([query("category", "A configured category (unknown: 404); empty or absent: every category", json!({"type": "string"})), limit]),
                ok_json("The ideas, best first", obj(&["category", "ideas"], json!({
                    "category": nullable("string"), "ideas": {"type": "array", "items": schema("Idea")}}))),
                &["404", "422", "503"]),
            "/api/v1/ideas/{id}": get("getIdea", "ideas", "One idea with its factor breakdown (value, weight in force, contribution)",
                json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}]),
                ok_json("The idea", schema("Idea")),
                &["404", "422", "503"]),
            "/api/v1/topics/hot": get("hotTopics", "views", "Hot topics: signals per topic in the window", json!([limit]),
                ok_json("Topics, most signals first", obj(&["topics"], json!({"topics": {"type": "array",
                    "items": obj(&["topic", "count"], json!({"topic": {"type": "string"}, "count": {"type": "integer", "minimum": 0}}))}}))),
                &["422", "503"]),
            "/api/v1/centroids": get("centroids", "views", "Rolling centroids per category and community",
                json!([query("kind", "category or community; absent: both", json!({"type": "string", "enum": ["category", "community"]})),
                       query("embedding", "true to include the 384-d mean", json!({"type": "boolean", "default": false}))]),
                ok_json("The centroids", obj(&["centroids"], json!({"centroids": {"type": "array",
                    "items": obj(&["kind", "key", "window_start", "window_end", "n"], json!({
                        "kind": {"type": "string", "enum": ["category", "community"]}, "key": {"type": "string"},
                        "window_start": nullable("string"), "window_end": nullable("string"),
                        "n": {"type": "integer"},
                        "embedding": {"type": ["array", "null"], "items": {"type": "number"}}}))}}))),
                &["422", "503"]),
            "/api/v1/heatmap": get("heatmap", "views", "Ideas first seen per category per day", json!([]),
                ok_json("One cell per category and day", obj(&["cells"], json!({"cells": {"type": "array",
                    "items": obj(&["category", "day", "ideas"], json!({"category": {"type": "string"},
                        "day": {"type": "string", "format": "date"}, "ideas": {"type": "integer"}}))}}))),
                &["503"]),
            "/api/v1/volume": get("volume", "views", "Distinct signals per category per day (each under its idea's category)", json!([]),
                ok_json("One point per category and day", obj(&["points"], json!({"points": {"type": "array",
                    "items": obj(&["category", "day", "signals"], json!({"category": {"type": "string"},
                        "day": {"type": "string", "format": "date"}, "signals": {"type": "integer", "minimum": 0}}))}}))),
                &["503"]),
            "/api/v1/scores/histogram": get("scoreHistogram", "ideas", "Active ideas per score bin ([0, 1] in equal bins) and category",
                json!([query("bins", "How many bins (1 to 100)", json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 10}))]),
                ok_json("Counts per bin, lowest scores first", obj(&["bins", "categories"], json!({
                    "bins": {"type": "integer"},
                    "categories": {"type": "array", "items": obj(&["category", "counts"], json!({
                        "category": {"type": "string"},
                        "counts": {"type": "array", "items": {"type": "integer", "minimum": 0}}}))}}))),
                &["422", "503"]),
            "/api/v1/progress": get("progress", "live", "The last epoch every sink committed: what the views hold", json!([]),
                ok_json("The epoch (its end, Unix seconds) and when it was committed; nulls before the first",
                    obj(&["epoch", "through", "committed_at"], json!({"epoch": nullable("integer"),
                        "through": {"type": ["string", "null"], "format": "date-time"},
                        "committed_at": {"type": ["string", "null"], "format": "date-time"}}))),
                &["503"]),
            "/api/v1/search": get("search", "ideas", "Semantic search: the query embedded with the model, nearest ideas by cosine",
                json!([{"name": "q", "in": "query", "required": true,
                        "description": format!("The search text: not blank, at most {} characters (api.max_query_chars)", bounds.max_query_chars),
                        "schema": {"type": "string", "minLength": 1, "maxLength": bounds.max_query_chars, "pattern": "[^\\s\\u0085]"}},
                       limit]),
                ok_json("The nearest ideas, most similar first", obj(&["query", "results"], json!({
                    "query": {"type": "string"}, "results": {"type": "array", "items": schema("SearchHit")}}))),
                &["422", "503"]),
            "/api/v1/stream": get("stream", "live", "Server-sent events: `epoch` per committed epoch; `lagged` {missed} when a slow client skipped epochs (re-read the views)", json!([]),
                text("An endless event stream", "text/event-stream"), &[]),
            "/api/v1/weights": get("weights", "feedback", "Scoring weights: in force, configured, and their history learned from feedback", json!([]),
                ok_json("The weights", obj(&["current", "configured", "history"], json!({
                    "current": schema("WeightsInForce"), "configured": schema("Weights"),
                    "history": {"type": "array", "items": schema("WeightsInForce")}}))),
                &["503"]),
            "/api/v1/ab": get("abResults", "feedback", "Latest 7-day A/B result per idea, marketplace and treatment variant",
                json!([query("idea_id", "Only this idea", json!({"type": "string", "format": "uuid"})), {
                    "name": "limit", "in": "query", "required": false,
                    "description": format!("How many (1 to {}, api.max_limit)", bounds.max_limit),
                    "schema": {"type": "integer", "minimum": 1, "maximum": bounds.max_limit, "default": 50}}]),
                ok_json("The results, newest first", obj(&["results"], json!({"results": {"type": "array",
                    "items": {"type": "object", "required": ["idea_id", "marketplace", "treatment", "window_end"],
                        "properties": {"idea_id": {"type": "string", "format": "uuid"}, "marketplace": {"type": "string"},
                            "treatment": {"type": "string"}, "window_end": time, "title": nullable("string")}}}}))),
                &["422", "503"]),
            "/api/v1/anchors": get("anchors", "feedback", "How classification feedback moved the classifier's anchors", json!([]),
                ok_json("Oldest first", obj(&["history"], json!({"history": {"type": "array", "items": obj(
                    &["effective_from", "anchor"], json!({"effective_from": time, "anchor": {"type": "string"},
                        "corrections": {"type": "integer"}, "rating_sum": {"type": "number"}, "shift": {"type": "number"}}))}}))),
                &["503"]),
            "/api/v1/openapi.json": get("openapi", "ops", "This document", json!([]),
                ok_json("OpenAPI 3.1", json!({"type": "object"})), &[]),
            "/health/live": get("live", "ops", "The process is up", json!([]),
                ok_json("Up", obj(&["status"], json!({"status": {"const": "live"}}))), &[]),
            "/health/ready": get("ready", "ops", "Postgres, Redis, the model and every bus source are usable (503 otherwise, naming what is not)", json!([]),
                ok_json("Ready", obj(&["status", "checks"], json!({"status": {"const": "ready"}, "checks": {"type": "object"}}))),
                &["503"]),
            "/api/v1/signals": webhook(),
            "/metrics": get("metrics", "ops", "Prometheus text format", json!([]),
                text("The metrics", "text/plain"), &[]),
            "/": get("dashboard", "ops", "The dashboard (HTML)", json!([]),
                text("The page", "text/html"), &[])
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "api.webhook_tokens / IDEAFLOW_WEBHOOK_TOKENS"}},
            "responses": {"Error": {"description": "The error envelope",
                "content": {"application/json": {"schema": schema("Error")}}}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_an_id_tags_and_typed_answers() {
        let doc = document(Bounds {
            max_limit: 500,
            max_query_chars: 2000,
        });
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path}"));
                assert!(ids.insert(id.to_owned()), "{id} twice");
                assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{id}");
                for (status, answer) in op["responses"].as_object().unwrap() {
                    let has_body = answer.get("$ref").is_some() || answer.get("content").is_some();
                    assert!(has_body, "{id} {status}: no content type");
                }
            }
        }
        let limit = &doc["paths"]["/api/v1/ideas/top"]["get"]["parameters"][1]["schema"];
        assert_eq!(limit["maximum"], 500);
    }
}
