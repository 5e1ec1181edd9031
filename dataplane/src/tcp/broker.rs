//! The partitions one broker serves: every `<topic>-<partition>` directory
//! under the log directory, plus topics created by producers.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use crate::log::{PartitionLog, TopicPartition, partition::LogOptions};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("log directory {path}: {source}", path = path.display())]
    LogDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] crate::log::partition::LogError),
}

/// `<topic>-<partition>` → the topic-partition, if the name is a valid one.
/// Names become directory names, so validation also keeps a request from
/// naming a path outside the log directory.
pub fn parse_dir_name(name: &str) -> Option<TopicPartition> {
    let (topic, partition) = name.rsplit_once('-')?;
    if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tp = TopicPartition {
        topic: topic.to_owned(),
        partition: partition.parse().ok()?,
    };
    tp.validate().is_ok().then_some(tp)
}

pub struct Broker {
    log_dir: PathBuf,
    options: LogOptions,
    auto_create: bool,
    partitions: RwLock<HashMap<(String, i32), Arc<PartitionLog>>>,
}

impl Broker {
    /// Opens every partition directory under `log_dir`, which must exist.
    pub fn open(
        log_dir: &Path,
        options: LogOptions,
        auto_create: bool,
    ) -> Result<Self, BrokerError> {
        let dir_err = |source| BrokerError::LogDir {
            path: log_dir.into(),
            source,
        };
        let mut partitions = HashMap::new();
        for entry in std::fs::read_dir(log_dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let Some(tp) = entry.file_name().to_str().and_then(parse_dir_name) else {
                continue;
            };
            if !entry.path().is_dir() {
                continue;
            }
            let log = PartitionLog::open(log_dir, &tp, options)?;
            for damage in log.damage() {
                ::log::warn!("{tp}: serving the valid prefix only: {damage}");
            }
            partitions.insert((tp.topic, tp.partition), Arc::new(log));
        }
        Ok(Self {
            log_dir: log_dir.into(),
            options,
            auto_create,
            partitions: RwLock::new(partitions),
        })
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>> {
        let map = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        map.get(&(topic.to_owned(), partition)).cloned()
    }

    /// The partition, creating the topic with one partition if it does not
    /// exist and auto-creation is on. `Ok(None)`: unknown and not created.
    pub fn partition_or_create(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Arc<PartitionLog>>, BrokerError> {
        if let Some(log) = self.partition(topic, partition) {
            return Ok(Some(log));
        }
        let tp = TopicPartition {
            topic: topic.to_owned(),
            partition,
        };
        tp.validate()?;
        if !self.auto_create || partition != 0 || self.topics().contains_key(topic) {
            return Ok(None);
        }
        let mut map = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = map.get(&(tp.topic.clone(), partition)) {
            return Ok(Some(log.clone()));
        }
        let log = Arc::new(PartitionLog::create(&self.log_dir, &tp, self.options)?);
        ::log::info!(
            "created topic {topic} with one partition in {}",
            self.log_dir.display()
        );
        map.insert((tp.topic, partition), log.clone());
        Ok(Some(log))
    }

    /// Topic → sorted partition indexes.
    pub fn topics(&self) -> BTreeMap<String, Vec<i32>> {
        let map = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in map.keys() {
            topics.entry(topic.clone()).or_default().push(*partition);
        }
        for partitions in topics.values_mut() {
            partitions.sort_unstable();
        }
        topics
    }

    pub fn auto_create(&self) -> bool {
        self.auto_create
    }
}

#[cfg(test)]
mod tests {
    use super::parse_dir_name;

    #[test]
    fn directory_names() {
        let tp = parse_dir_name("my-topic-12").unwrap();
        assert_eq!((tp.topic.as_str(), tp.partition), ("my-topic", 12));
        for bad in [
            "events", "events-", "events-x", "-0", "../x-0", "a b-0", ".-0", "..-1",
        ] {
            assert!(parse_dir_name(bad).is_none(), "{bad:?} accepted");
        }
    }
}
