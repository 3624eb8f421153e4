// sqlx::migrate! embeds sinks/migrations at compile time; rebuild when a
// migration is added or changed (sqlx's documented recipe).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
