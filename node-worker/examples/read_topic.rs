//! Prints every message of a Kafka topic, from the beginning of each partition to its current end, one
//! value per line: the pairs the worker produced, for the end-to-end tests (`make e2e`) and for looking.
//!
//! ```sh
//! cargo run -q -p node-worker --example read_topic -- 127.0.0.1:9092 interceptor-pairs
//! ```
//!
//! Exits 0 having printed what the topic holds (nothing for a topic that does not exist yet), 1 when the
//! broker cannot be read.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(brokers), Some(topic), None) = (args.next(), args.next(), args.next()) else {
        bail!("usage: read_topic BROKERS TOPIC");
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "interceptor-read-topic")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .context("creating the consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(&topic), TIMEOUT)
        .with_context(|| format!("metadata of {topic} from {brokers}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    // Where each partition ends now: read up to there, then stop.
    let mut ends = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&topic, p, TIMEOUT)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        if high > low {
            ends.push((p, high));
            assignment.add_partition_offset(&topic, p, Offset::Offset(low))?;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + TIMEOUT;
    let mut out = std::io::stdout().lock();
    while !ends.is_empty() {
        if Instant::now() > deadline {
            bail!("{topic}: partitions {ends:?} not read to their end within {TIMEOUT:?}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("reading")?;
        out.write_all(message.payload().unwrap_or_default())?;
        out.write_all(b"\n")?;
        let (partition, next) = (message.partition(), message.offset() + 1);
        ends.retain(|&(p, end)| p != partition || next < end);
    }
    out.flush()?;
    Ok(())
}
