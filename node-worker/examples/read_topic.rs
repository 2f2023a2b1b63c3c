//! Prints the messages of a Kafka topic, from the beginning of each partition to its current end, one
//! value per line: the pairs the worker produced, for the end-to-end tests (`make e2e`), the Kafka runs of
//! `make bench` and for looking.
//!
//! ```sh
//! cargo run -q -p node-worker --example read_topic -- 127.0.0.1:9092 interceptor-pairs
//! cargo run -q -p node-worker --example read_topic -- --count 127.0.0.1:9092 interceptor-pairs
//! cargo run -q -p node-worker --example read_topic -- --last 1000 127.0.0.1:9092 interceptor-pairs
//! ```
//!
//! `--count` prints only how many messages the topic holds (each partition's end minus its start, from
//! the broker's watermarks). `--last N` prints only the last N messages of each partition: the tests'
//! broker (tansu 0.6) takes minutes to serve a few thousand lz4-compressed messages from the start of a
//! partition, and seconds for its end, so `make bench` counts everything and reads a sample.
//!
//! Exits 0 having printed what was asked (nothing for a topic that does not exist yet), 1 when the broker
//! cannot be read or no message arrives for 20 s before every partition's end is reached (a large topic
//! takes as long as it takes while messages keep arriving).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);
const USAGE: &str = "usage: read_topic [--count | --last N] BROKERS TOPIC";

/// What to print.
enum Want {
    Everything,
    Count,
    Last(i64),
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (want, rest) = match args.first().map(String::as_str) {
        Some("--count") => (Want::Count, &args[1..]),
        Some("--last") => {
            let n = args.get(1).and_then(|n| n.parse().ok()).context(USAGE)?;
            (Want::Last(n), &args[2..])
        }
        _ => (Want::Everything, &args[..]),
    };
    let [brokers, topic] = rest else {
        bail!(USAGE);
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "interceptor-read-topic")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .context("creating the consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("metadata of {topic} from {brokers}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    // Where each partition ends now: read up to there, then stop.
    let mut ends = Vec::new();
    let mut total = 0;
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        total += (high - low).max(0);
        let start = match want {
            Want::Last(n) => low.max(high - n),
            _ => low,
        };
        if high > start {
            ends.push((p, high));
            assignment.add_partition_offset(topic, p, Offset::Offset(start))?;
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Want::Count = want {
        writeln!(out, "{total}")?;
        out.flush()?;
        return Ok(());
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment)?;
    let mut deadline = Instant::now() + TIMEOUT;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            bail!("{topic}: partitions {ends:?} not read to their end: nothing for {TIMEOUT:?}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("reading")?;
        deadline = Instant::now() + TIMEOUT;
        out.write_all(message.payload().unwrap_or_default())?;
        out.write_all(b"\n")?;
        let (partition, next) = (message.partition(), message.offset() + 1);
        ends.retain(|&(p, end)| p != partition || next < end);
    }
    out.flush()?;
    Ok(())
}
