//! `ideaflow normalize` on a raw fixture of each platform format: valid
//! Signals out, personal data purged, unusable records reported.

#[path = "common/mod.rs"]
mod common;

use common::*;

fn normalize(adapter: &str, fixture: &str) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    ok(ideaflow()
        .args(["normalize", "--adapter", adapter, "--input"])
        .arg(repo_root().join("tests/fixtures/raw").join(fixture))
        .arg("--out")
        .arg(&out)
        .arg("--dead-letter")
        .arg(&dead));
    let signals = read_jsonl(&out);
    for s in &signals {
        // Every adapted record is a valid canonical Signal.
        ideaflow_operators::validate::parse_line(s.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{adapter} produced an invalid signal: {e}: {s}"));
        assert_eq!(s["source"], adapter);
        let text = s.to_string();
        for pii in [
            "@example.",
            "555-0134",
            "CatLover99",
            "forest.fairy",
            "retrofan",
        ] {
            assert!(!text.contains(pii), "{adapter} leaked {pii}: {text}");
        }
    }
    (signals, read_jsonl(&dead))
}

#[test]
fn reddit_listing() {
    let (s, dead) = normalize("reddit", "reddit_listing.json");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0]["id"], "t3_1a2b3c");
    assert_eq!(s[0]["community"], "r/aww");
    assert_eq!(s[0]["engagement"]["likes"], 5123);
    assert_eq!(s[0]["engagement"]["comments"], 214);
    assert!(s[0]["content"].as_str().unwrap().contains("[email]"));
    assert!(s[0]["content"].as_str().unwrap().contains("[phone]"));
    assert!(s[0]["metadata"]["author"]
        .as_str()
        .unwrap()
        .starts_with("user_"));
    assert_eq!(dead.len(), 1);
}

#[test]
fn youtube_videos_list_with_string_statistics() {
    let (s, dead) = normalize("youtube", "youtube_videos.json");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0]["engagement"]["views"], 1_523_001);
    assert_eq!(
        s[0]["topics"],
        serde_json::json!(["speedrun", "gaming", "glitch"])
    );
    assert_eq!(s[0]["published_at"], "2024-10-30T18:00:00Z");
    assert_eq!(dead[0]["reason"], "wrong_type");
}

#[test]
fn tiktok_and_instagram_hashtag_records() {
    let (t, dead) = normalize("tiktok", "tiktok_hashtags.jsonl");
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["engagement"]["views"], 912_000_000u64);
    assert_eq!(t[0]["captured_at"], "2024-10-31T00:00:00Z");
    assert_eq!(dead.len(), 1);
    let (i, dead) = normalize("instagram", "instagram_top_media.jsonl");
    assert_eq!(i.len(), 2);
    assert_eq!(i[0]["topics"], serde_json::json!(["cottagecore", "nature"]));
    assert_eq!(i[1]["id"], "ig-17895695668004551");
    assert_eq!(dead.len(), 1);
}

#[test]
fn calendar_csv_and_archive() {
    let (c, dead) = normalize("calendar", "calendar.csv");
    assert_eq!(c.len(), 3);
    assert_eq!(c[0]["content"], "Halloween");
    assert_eq!(c[0]["captured_at"], "2024-10-31T00:00:00Z");
    assert!(c[0].get("locale").is_none(), "empty locale means global");
    assert_eq!(c[1]["locale"], "en-US");
    assert_eq!(dead.len(), 1);
    let (a, dead) = normalize("archive", "archive.jsonl");
    assert_eq!(a.len(), 2);
    assert_eq!(
        a[0]["content"].as_str().unwrap().lines().next().unwrap(),
        "Tamagotchi turns 30 (1996)"
    );
    assert_eq!(a[0]["captured_at"], "2026-11-23T00:00:00Z");
    assert_eq!(dead.len(), 1);
}

#[test]
fn bundled_calendar_normalizes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cal.jsonl");
    ok(ideaflow()
        .args([
            "normalize",
            "--adapter",
            "calendar",
            "--input",
            "config/calendar.csv",
            "--out",
        ])
        .arg(&out));
    assert!(read_jsonl(&out).len() >= 10);
}
