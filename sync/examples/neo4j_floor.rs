//! Neo4j's own floor for the sink's graph: how fast the server alone creates the nodes
//! and relationships the Neo4j sink writes, with and without its constraint and indexes,
//! from data the server generates itself (no parameters) and from parameters.
//!
//! ```text
//! ARBOR_SERVICES=neo4j bash tests/services/with-services.sh \
//!   target/release/examples/neo4j_floor [NODES] [BATCH] [CASE…]
//! ```
//!
//! Each case writes NODES nodes (default 200 000) in transactions of BATCH rows (default
//! 5 000) under a label of its own (so cases do not share indexes), and prints events/s and
//! the Neo4j JVM's CPU per node (from /proc; the pid is read from
//! `$ARBOR_TEST_SERVICES_DIR/neo4j/pid` or `ARBOR_BENCH_PIDS_NEO4J`).

use std::time::Instant;

use neo4rs::{query, BoltList, BoltMap, BoltNull, BoltString, BoltType, ConfigBuilder, Graph};

#[path = "support/proc.rs"]
mod proc;
use proc::{tree_cpu as cpu, var};

fn jvm_pid() -> String {
    if let Some(p) = var("ARBOR_BENCH_PIDS_NEO4J") {
        return p;
    }
    var("ARBOR_TEST_SERVICES_DIR")
        .and_then(|d| std::fs::read_to_string(format!("{d}/neo4j/pid")).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default()
}

fn s(v: impl Into<String>) -> BoltType {
    BoltType::String(BoltString::from(v.into()))
}

async fn run(g: &Graph, qs: Vec<neo4rs::Query>) -> Result<(), neo4rs::Error> {
    let mut txn = g.start_txn().await?;
    for q in qs {
        txn.run(q).await?;
    }
    txn.commit().await
}

const CONTENT: &str = "message 1: lorem ipsum lorem ipsum lorem ipsum lorem ipsum lorem ipsum \
                       lorem ipsum lorem ipsum lorem ipsum ";

/// The properties of one generated node, as Cypher map entries over `i` (an integer) and
/// `$p` (the case's id prefix).
const GEN_PROPS: &str = "id: $p + toString(1000000000 + i), workflow_id: $p + toString(i / 1000), \
     parent_id: CASE WHEN i % 1000 = 0 THEN null ELSE $p + toString(999999999 + i) END, \
     type: 'message', role: null, content: $content, payload: '{\"i\":1,\"tokens\":42}', \
     metadata: '{}', agent_id: null, user_id: null, branch_id: $p + toString(i / 1000), \
     depth: i % 1000, seq: i, timestamp: datetime()";

/// One node row as the sink sends it.
fn row(p: &str, i: i64) -> BoltType {
    let mut m = BoltMap::with_capacity(15);
    let mut put = |k: &str, v: BoltType| m.put(BoltString::from(k), v);
    put("id", s(format!("{p}{}", 1_000_000_000 + i)));
    put("workflow_id", s(format!("{p}{}", i / 1000)));
    put(
        "parent_id",
        if i % 1000 == 0 {
            BoltType::Null(BoltNull)
        } else {
            s(format!("{p}{}", 999_999_999 + i))
        },
    );
    put("type", s("message"));
    put("role", BoltType::Null(BoltNull));
    put("content", s(CONTENT));
    put("payload", s("{\"i\":1,\"tokens\":42}"));
    put("metadata", s("{}"));
    put("agent_id", BoltType::Null(BoltNull));
    put("user_id", BoltType::Null(BoltNull));
    put("branch_id", s(format!("{p}{}", i / 1000)));
    put("depth", BoltType::from(i % 1000));
    put("seq", BoltType::from(i));
    put("timestamp", s("2025-01-01T00:00:00.123456Z"));
    put("meta", BoltType::Map(BoltMap::new()));
    BoltType::Map(m)
}

/// One node row with its properties as one map (nulls left out), for `SET n += row.props`.
fn map_row(p: &str, i: i64) -> BoltType {
    let BoltType::Map(full) = row(p, i) else {
        return BoltType::Null(BoltNull);
    };
    let mut props = BoltMap::with_capacity(15);
    let mut m = BoltMap::with_capacity(5);
    for (k, v) in full.value {
        match k.value.as_str() {
            "id" | "parent_id" | "seq" | "timestamp" => {
                m.put(k.clone(), v.clone());
            }
            _ => {}
        }
        if matches!(v, BoltType::Null(_)) || matches!(k.value.as_str(), "meta" | "timestamp") {
            continue;
        }
        props.put(k, v);
    }
    m.put(BoltString::from("props"), BoltType::Map(props));
    BoltType::Map(m)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: i64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let batch: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5000);
    let only: Vec<String> = args.collect();
    let (Some(url), Some(user), Some(password)) = (
        var("ARBOR_TEST_NEO4J_URL"),
        var("ARBOR_TEST_NEO4J_USER"),
        var("ARBOR_TEST_NEO4J_PASSWORD"),
    ) else {
        return Err("ARBOR_TEST_NEO4J_URL/USER/PASSWORD not set".into());
    };
    let g = Graph::connect(
        ConfigBuilder::default()
            .uri(url)
            .user(user)
            .password(password)
            .max_connections(2)
            .build()?,
    )
    .await?;
    let pid = jvm_pid();
    // (name, schema: unique id / + 3 indexes, statement kind)
    // kinds: gen-nodes (CREATE only), gen-rels (CREATE nodes, then MATCH parents and CREATE
    // the edges), param-create (CREATE + MATCH parent from rows), param-merge (the sink's
    // MERGE statement).
    let cases: &[(&str, u8, &str)] = &[
        ("warmup", 2, "param-merge"),
        ("gen-nodes-noschema", 0, "gen-nodes"),
        ("gen-idonly-noschema", 0, "gen-idonly"),
        ("gen-nocontent-noschema", 0, "gen-nocontent"),
        ("gen-strings-noschema", 0, "gen-strings"),
        ("gen-ints-noschema", 0, "gen-ints"),
        ("gen-nodes-unique", 1, "gen-nodes"),
        ("gen-nodes-all", 2, "gen-nodes"),
        ("gen-rels-all", 2, "gen-rels"),
        ("param-create-all", 2, "param-create"),
        ("param-merge-all", 2, "param-merge"),
        ("param-merge-unique", 1, "param-merge"),
        ("param-mergemap-all", 2, "param-merge-map"),
        ("param-merge-all-2", 2, "param-merge"),
        ("param-mergemap-all-2", 2, "param-merge-map"),
        ("param-mergenode-createrel-all", 2, "param-merge-create"),
        ("param-create-prev-all", 2, "param-create-prev"),
    ];
    for (k, (name, schema, kind)) in cases.iter().enumerate() {
        if !only.is_empty() && !only.iter().any(|o| o == name) && *name != "warmup" {
            continue;
        }
        let label = format!("F{k}_{}", std::process::id());
        let p = format!("{label}-");
        let mut schema_q = Vec::new();
        if *schema >= 1 {
            schema_q.push(format!(
                "CREATE CONSTRAINT {label}_id FOR (n:{label}) REQUIRE n.id IS UNIQUE"
            ));
        }
        if *schema >= 2 {
            for prop in ["workflow_id", "branch_id", "agent_id"] {
                schema_q.push(format!(
                    "CREATE INDEX {label}_{prop} FOR (n:{label}) ON (n.{prop})"
                ));
            }
        }
        for q in schema_q {
            run(&g, vec![query(&q)]).await?;
        }
        run(&g, vec![query("CALL db.awaitIndexes(100)")]).await?;
        let props = match *kind {
            "gen-idonly" => "id: $p + toString(1000000000 + i)".to_owned(),
            "gen-nocontent" => GEN_PROPS.replace("content: $content,", ""),
            // ids and content only
            "gen-strings" => {
                "id: $p + toString(1000000000 + i), workflow_id: $p + toString(i / 1000), \
                 parent_id: $p + toString(999999999 + i), branch_id: $p + toString(i / 1000), \
                 content: $content"
                    .to_owned()
            }
            "gen-ints" => "id: i, workflow_id: i / 1000, parent_id: i - 1, branch_id: i / 1000, \
                 depth: i % 1000, seq: i"
                .to_owned(),
            _ => GEN_PROPS.to_owned(),
        };
        let create_props = format!("CREATE (n:{label}:W {{{props}}})");
        let gen_nodes = format!("UNWIND range($from, $to) AS i {create_props}");
        let gen_rels = format!(
            "UNWIND range($from, $to) AS i WITH i WHERE i % 1000 <> 0 \
             MATCH (p:{label} {{id: $p + toString(999999999 + i)}}) \
             MATCH (c:{label} {{id: $p + toString(1000000000 + i)}}) \
             CREATE (p)-[:PARENT_OF {{seq: i}}]->(c)"
        );
        let set_props = "n.workflow_id = row.workflow_id, n.parent_id = row.parent_id, \
             n.type = row.type, n.role = row.role, n.content = row.content, \
             n.payload = row.payload, n.metadata = row.metadata, n.agent_id = row.agent_id, \
             n.user_id = row.user_id, n.branch_id = row.branch_id, n.depth = row.depth, \
             n.seq = row.seq, n.timestamp = datetime(row.timestamp)";
        let param_create = format!(
            "UNWIND $rows AS row CREATE (n:{label}:W {{id: row.id}}) SET {set_props} \
             WITH n, row WHERE row.parent_id IS NOT NULL \
             MATCH (p:{label} {{id: row.parent_id}}) CREATE (p)-[:PARENT_OF {{seq: row.seq}}]->(n)"
        );
        let param_merge = format!(
            "UNWIND $rows AS row MERGE (n:{label} {{id: row.id}}) SET n:W, {set_props} \
             SET n += row.meta WITH n, row WHERE row.parent_id IS NOT NULL \
             MERGE (p:{label} {{id: row.parent_id}}) \
             MERGE (p)-[r:PARENT_OF]->(n) ON CREATE SET r.seq = row.seq"
        );
        let param_merge_create = format!(
            "UNWIND $rows AS row MERGE (n:{label} {{id: row.id}}) SET n:W, {set_props} \
             SET n += row.meta WITH n, row WHERE row.parent_id IS NOT NULL \
             MATCH (p:{label} {{id: row.parent_id}}) \
             CREATE (p)-[r:PARENT_OF {{seq: row.seq}}]->(n)"
        );
        let param_merge_map = format!(
            "UNWIND $rows AS row MERGE (n:{label} {{id: row.id}}) \
             SET n:W, n += row.props, n.timestamp = datetime(row.timestamp) \
             WITH n, row WHERE row.parent_id IS NOT NULL \
             MERGE (p:{label} {{id: row.parent_id}}) \
             MERGE (p)-[r:PARENT_OF]->(n) ON CREATE SET r.seq = row.seq"
        );
        // Parents carried through the UNWIND: the previous row's node when it is the parent.
        let param_create_prev = format!(
            "UNWIND $rows AS row CREATE (n:{label}:W {{id: row.id}}) SET {set_props} \
             WITH collect(n) AS ns, collect(row) AS rows \
             UNWIND range(1, size(ns) - 1) AS k \
             WITH ns[k - 1] AS p, ns[k] AS n, rows[k] AS row \
             WHERE row.parent_id = p.id \
             CREATE (p)-[:PARENT_OF {{seq: row.seq}}]->(n)"
        );
        let total = if *name == "warmup" {
            total.min(200_000)
        } else {
            total
        };
        let c0 = cpu(&pid);
        let t = Instant::now();
        let mut from = 0;
        while from < total {
            let to = (from + batch).min(total) - 1;
            let mut qs = Vec::new();
            match *kind {
                k if k.starts_with("gen-") => {
                    qs.push(
                        query(&gen_nodes)
                            .param("from", from)
                            .param("to", to)
                            .param("p", p.as_str())
                            .param("content", CONTENT),
                    );
                    if *kind == "gen-rels" {
                        qs.push(
                            query(&gen_rels)
                                .param("from", from)
                                .param("to", to)
                                .param("p", p.as_str()),
                        );
                    }
                }
                _ => {
                    let rows: Vec<BoltType> = (from..=to)
                        .map(|i| {
                            if *kind == "param-merge-map" {
                                map_row(&p, i)
                            } else {
                                row(&p, i)
                            }
                        })
                        .collect();
                    let text = match *kind {
                        "param-create" => &param_create,
                        "param-merge" => &param_merge,
                        "param-merge-create" => &param_merge_create,
                        "param-merge-map" => &param_merge_map,
                        _ => &param_create_prev,
                    };
                    qs.push(query(text).param("rows", BoltType::List(BoltList::from(rows))));
                }
            }
            run(&g, qs).await?;
            from = to + 1;
        }
        let secs = t.elapsed().as_secs_f64();
        let jvm = cpu(&pid) - c0;
        let check = format!(
            "MATCH (n:{label}) WITH count(n) AS n \
             OPTIONAL MATCH (:{label})-[r:PARENT_OF]->() RETURN n, count(r) AS r"
        );
        let mut txn = g.start_txn().await?;
        let mut st = txn.execute(query(&check)).await?;
        let mut counts = (0i64, 0i64);
        while let Some(r) = st.next(txn.handle()).await? {
            counts = (r.get("n")?, r.get("r")?);
        }
        txn.commit().await?;
        println!(
            "{name:32} {total} nodes in {secs:6.2} s = {:7.0}/s  JVM {:6.1} us/node  (nodes {}, rels {})",
            total as f64 / secs,
            jvm * 1e6 / total as f64,
            counts.0,
            counts.1
        );
    }
    Ok(())
}
