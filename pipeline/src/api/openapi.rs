//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`.

use serde_json::{json, Value};

fn get(summary: &str, params: Value, ok: &str) -> Value {
    json!({"get": {
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": {"description": ok},
            "404": {"$ref": "#/components/responses/Error"},
            "413": {"$ref": "#/components/responses/Error"},
            "422": {"$ref": "#/components/responses/Error"},
            "503": {"$ref": "#/components/responses/Error"}
        }
    }})
}

/// `POST /api/v1/signals`: webhook ingest (README, Live operation).
fn webhook() -> Value {
    let error = json!({"$ref": "#/components/responses/Error"});
    let retry = json!({"description": "The error envelope; Retry-After says when to try again",
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let record = json!({"type": "object", "description": "A Signal or an event envelope (README, Signals and events)"});
    json!({"post": {
        "summary": "Webhook ingest: one Signal or envelope, a JSON array of them, or NDJSON; valid records are appended to the bus the pipeline reads (api.webhook_bus) before the answer",
        "security": [{"bearer": []}],
        "requestBody": {"required": true, "content": {
            "application/json": {"schema": {"oneOf": [record, {"type": "array", "items": record}]}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one record per line"}}
        }},
        "responses": {
            "202": {"description": "Accepted: every valid record is on the bus",
                "content": {"application/json": {"schema": {"type": "object",
                    "required": ["accepted", "rejected", "bus", "positions"],
                    "properties": {
                        "accepted": {"type": "array", "items": {"type": "string"}, "description": "eventId, or source:id"},
                        "rejected": {"type": "array", "items": {"type": "object", "required": ["index", "reason", "message"],
                            "properties": {"index": {"type": "integer"}, "reason": {"type": "string"}, "message": {"type": "string"}}}},
                        "bus": {"type": "string"},
                        "positions": {"type": "array", "items": {"type": "string"}}}}}}},
            "400": error, "401": {"description": "No or wrong bearer token (WWW-Authenticate: Bearer)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            "404": error, "413": error, "422": error, "429": retry, "503": retry
        }
    }})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

pub fn document() -> Value {
    let limit = query(
        "limit",
        "How many (1 to api.max_limit)",
        json!({"type": "integer", "minimum": 1}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ideaflow", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Live materialized views of trending ideas: scores, topics, centroids, semantic search."},
        "paths": {
            "/api/v1/ideas/top": get("Top active ideas by score, optionally of one category",
                json!([query("category", "A configured category; unknown: 404", json!({"type": "string"})), limit]),
                "{category, ideas: [idea with factor breakdown]}"),
            "/api/v1/ideas/{id}": get("One idea with its factor breakdown (value, weight in force, contribution)",
                json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}]),
                "idea"),
            "/api/v1/topics/hot": get("Hot topics: signals per topic in the window", json!([limit]), "{topics: [{topic, count}]}"),
            "/api/v1/centroids": get("Rolling centroids per category and community",
                json!([query("kind", "category or community", json!({"type": "string", "enum": ["category", "community"]})),
                       query("embedding", "true to include the 384-d mean", json!({"type": "boolean"}))]),
                "{centroids: [{kind, key, window_start, window_end, n}]}"),
            "/api/v1/heatmap": get("Ideas first seen per category per day", json!([]), "{cells: [{category, day, ideas}]}"),
            "/api/v1/search": get("Semantic search: the query embedded with the model, nearest ideas by cosine",
                json!([{"name": "q", "in": "query", "required": true, "schema": {"type": "string"}}, limit]),
                "{query, results: [idea + similarity]}"),
            "/api/v1/stream": get("Server-sent events: `epoch` per committed epoch; `lagged` {missed} when a slow client skipped epochs (re-read the views)", json!([]), "text/event-stream"),
            "/api/v1/weights": get("Scoring weights: in force, configured, and their history learned from feedback", json!([]),
                "{current, configured, history: [{effective_from, five weights, origin, ideas, impressions}]}"),
            "/api/v1/ab": get("Latest 7-day A/B result per idea, marketplace and treatment variant",
                json!([query("idea_id", "Only this idea", json!({"type": "string", "format": "uuid"})), limit]),
                "{results: [ab_result + title]}"),
            "/api/v1/anchors": get("How classification feedback moved the classifier's anchors", json!([]),
                "{history: [{effective_from, anchor, corrections, rating_sum, shift}]}"),
            "/api/v1/openapi.json": get("This document", json!([]), "OpenAPI 3.1"),
            "/health/live": get("The process is up", json!([]), "{status: live}"),
            "/health/ready": get("Postgres, Redis, the model and every bus source are usable (503 otherwise, naming the source)", json!([]), "{status: ready, checks: {postgres, redis, model, sources}}"),
            "/api/v1/signals": webhook(),
            "/metrics": get("Prometheus text format", json!([]), "metrics")
        },
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error_code", "message", "timestamp", "details"],
                "properties": {"error_code": {"type": "string"}, "message": {"type": "string"},
                               "timestamp": {"type": "string", "format": "date-time"}, "details": {}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "api.webhook_tokens / IDEAFLOW_WEBHOOK_TOKENS"}},
            "responses": {"Error": {"description": "The error envelope",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
        }
    })
}
