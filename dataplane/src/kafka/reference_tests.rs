//! Our codec against the `kafka-protocol` crate, an independent
//! implementation generated from Kafka's own message definitions: what we
//! encode it must decode to the same values, and what it encodes we must
//! decode. It knows no ListOffsets v0 (removed in Kafka 4), so that version is
//! checked against the documented layout instead.

use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiVersionsResponse, FetchRequest as KFetchRequest, FetchResponse,
        ListOffsetsRequest as KList, ListOffsetsResponse, MetadataRequest as KMeta,
        MetadataResponse, ProduceRequest as KProduce, ProduceResponse, TopicName,
        fetch_request::{FetchPartition as KFetchPartition, FetchTopic as KFetchTopic},
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        metadata_request::MetadataRequestTopic,
        produce_request::{PartitionProduceData, TopicProduceData},
    },
    protocol::{Decodable, Encodable, StrBytes},
};

use super::{messages::*, wire::Reader};

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

#[test]
fn api_versions_response_all_versions() {
    for version in 0..=3 {
        let mut buf = Vec::new();
        encode_api_versions_response(&mut buf, version, error::NONE);
        let decoded = ApiVersionsResponse::decode(&mut Bytes::from(buf), version).unwrap();
        assert_eq!(decoded.error_code, 0);
        let keys: Vec<_> = decoded
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        assert_eq!(keys, SUPPORTED_APIS.to_vec(), "version {version}");
    }
}

#[test]
fn metadata_request_and_response() {
    for version in 0..=4 {
        let req = KMeta::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic("t1"))),
            ]))
            // Before v4 the field does not exist (and means "true").
            .with_allow_auto_topic_creation(version < 4);
        let mut buf = BytesMut::new();
        req.encode(&mut buf, version).unwrap();
        let ours = MetadataRequest::decode(&mut Reader::new(&buf), version).unwrap();
        assert_eq!(ours.topics, Some(vec!["t1"]));
        assert_eq!(ours.allow_auto_topic_creation, version < 4);

        let mut buf = Vec::new();
        let broker = Broker {
            node_id: 0,
            host: "10.0.0.1",
            port: 9092,
        };
        let topics = [TopicMetadata {
            error_code: 0,
            name: "t1",
            partitions: vec![(0, 0), (1, 0)],
        }];
        encode_metadata_response(&mut buf, version, &broker, "cluster", &topics);
        let decoded = MetadataResponse::decode(&mut Bytes::from(buf), version).unwrap();
        assert_eq!(decoded.brokers[0].host.as_str(), "10.0.0.1");
        assert_eq!(decoded.brokers[0].port, 9092);
        assert_eq!(decoded.topics[0].name.as_ref().unwrap().0.as_str(), "t1");
        assert_eq!(decoded.topics[0].partitions.len(), 2);
        assert_eq!(decoded.topics[0].partitions[1].partition_index, 1);
    }
}

#[test]
fn list_offsets_v1_v2() {
    for version in 1..=2 {
        let req = KList::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(3)
                        .with_timestamp(EARLIEST_TIMESTAMP),
                ]),
        ]);
        let mut buf = BytesMut::new();
        req.encode(&mut buf, version).unwrap();
        let ours = ListOffsetsRequest::decode(&mut Reader::new(&buf), version).unwrap();
        assert_eq!(ours.topics, vec![("t", vec![(3, EARLIEST_TIMESTAMP)])]);

        let resp = ListOffsetsPartitionResponse {
            partition: 3,
            error_code: 0,
            timestamp: -1,
            offset: 42,
        };
        let mut buf = Vec::new();
        encode_list_offsets_response(&mut buf, version, &[("t", vec![resp])]);
        let decoded = ListOffsetsResponse::decode(&mut Bytes::from(buf.clone()), version).unwrap();
        assert_eq!(decoded.topics[0].partitions[0].offset, 42);
        assert_eq!(
            decode_list_offsets_response(&mut Reader::new(&buf), version).unwrap(),
            vec![resp]
        );
    }
}

#[test]
fn list_offsets_v0_layout() {
    // v0 request: replica_id, [topic, [partition, timestamp, max_num_offsets]]
    let mut req = Vec::new();
    ListOffsetsRequest {
        isolation_level: 0,
        topics: vec![("t", vec![(0, LATEST_TIMESTAMP)])],
    }
    .encode(&mut req, 0);
    let expected: Vec<u8> = [
        &(-1i32).to_be_bytes()[..],
        &1i32.to_be_bytes(),
        &1i16.to_be_bytes(),
        b"t",
        &1i32.to_be_bytes(),
        &0i32.to_be_bytes(),
        &(-1i64).to_be_bytes(),
        &1i32.to_be_bytes(),
    ]
    .concat();
    assert_eq!(req, expected);
    let decoded = ListOffsetsRequest::decode(&mut Reader::new(&req), 0).unwrap();
    assert_eq!(decoded.topics, vec![("t", vec![(0, LATEST_TIMESTAMP)])]);
    // v0 response: [topic, [partition, error_code, [offset]]]
    let resp = ListOffsetsPartitionResponse {
        partition: 0,
        error_code: 0,
        timestamp: -1,
        offset: 7,
    };
    let mut buf = Vec::new();
    encode_list_offsets_response(&mut buf, 0, &[("t", vec![resp])]);
    let expected: Vec<u8> = [
        &1i32.to_be_bytes()[..],
        &1i16.to_be_bytes(),
        b"t",
        &1i32.to_be_bytes(),
        &0i32.to_be_bytes(),
        &0i16.to_be_bytes(),
        &1i32.to_be_bytes(),
        &7i64.to_be_bytes(),
    ]
    .concat();
    assert_eq!(buf, expected);
    assert_eq!(
        decode_list_offsets_response(&mut Reader::new(&buf), 0).unwrap()[0].offset,
        7
    );
}

#[test]
fn fetch_request_and_response_framing() {
    for version in 4..=11 {
        let req = KFetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                KFetchTopic::default()
                    .with_topic(topic("events"))
                    .with_partitions(vec![
                        KFetchPartition::default()
                            .with_partition(2)
                            .with_fetch_offset(1234)
                            .with_partition_max_bytes(65536),
                    ]),
            ]);
        let mut buf = BytesMut::new();
        req.encode(&mut buf, version).unwrap();
        let ours = FetchRequest::decode(&mut Reader::new(&buf), version).unwrap();
        assert_eq!(ours.max_wait_ms, 500);
        assert_eq!(ours.topics[0].name, "events");
        assert_eq!(
            ours.topics[0].partitions,
            vec![FetchPartition {
                partition: 2,
                fetch_offset: 1234,
                partition_max_bytes: 65536
            }]
        );
        // Our encoder, their decoder.
        let mut mine = Vec::new();
        ours.encode(&mut mine, version);
        let back = KFetchRequest::decode(&mut Bytes::from(mine), version).unwrap();
        assert_eq!(back.topics[0].partitions[0].fetch_offset, 1234);

        // A response whose records are some bytes the crate must find intact.
        let records: Vec<u8> = (0..100u8).collect();
        let header = FetchPartitionHeader {
            partition: 2,
            error_code: 0,
            high_watermark: 99,
            last_stable_offset: 99,
            // Not on the wire before v5; decodes as -1 there.
            log_start_offset: if version >= 5 { 0 } else { -1 },
            records_len: Some(records.len() as i32),
        };
        let mut resp = Vec::new();
        encode_fetch_response_top(&mut resp, version, 1);
        encode_fetch_topic_top(&mut resp, "events", 1);
        encode_fetch_partition_header(&mut resp, version, &header);
        resp.extend_from_slice(&records);
        let decoded = FetchResponse::decode(&mut Bytes::from(resp.clone()), version).unwrap();
        let p = &decoded.responses[0].partitions[0];
        assert_eq!(p.high_watermark, 99);
        assert_eq!(p.records.as_deref(), Some(&records[..]));
        let (err, parts) = decode_fetch_response(&mut Reader::new(&resp), version).unwrap();
        assert_eq!(err, 0);
        assert_eq!(parts[0].header, header);
        assert_eq!(&resp[parts[0].records.clone()], &records[..]);
    }
}

#[test]
fn produce_request_and_response() {
    for version in 3..=8 {
        let records = Bytes::from_static(b"not really a batch, just bytes");
        let req = KProduce::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic("t"))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records.clone())),
                    ]),
            ]);
        let mut buf = BytesMut::new();
        req.encode(&mut buf, version).unwrap();
        let ours = ProduceRequest::decode(&mut Reader::new(&buf), 0, version).unwrap();
        assert_eq!(ours.acks, -1);
        let (partition, range) = ours.topics[0].partitions[0].clone();
        assert_eq!(partition, 0);
        assert_eq!(&buf[range.unwrap()], &records[..]);

        let mut mine = Vec::new();
        encode_produce_request(&mut mine, 1, 1000, "t", 0, &records);
        let back = KProduce::decode(&mut Bytes::from(mine), version).unwrap();
        assert_eq!(
            back.topic_data[0].partition_data[0].records.as_ref(),
            Some(&records)
        );

        let p = ProducePartitionResponse {
            partition: 0,
            error_code: error::CORRUPT_MESSAGE,
            base_offset: -1,
            log_start_offset: 0,
            error_message: (version >= 8).then(|| "batch at byte 0: CRC mismatch".to_owned()),
        };
        let mut buf = Vec::new();
        encode_produce_response(&mut buf, version, &[("t", vec![p.clone()])]);
        let decoded = ProduceResponse::decode(&mut Bytes::from(buf.clone()), version).unwrap();
        assert_eq!(decoded.responses[0].partition_responses[0].error_code, 2);
        let mine = decode_produce_response(&mut Reader::new(&buf), version).unwrap();
        assert_eq!(mine[0].error_code, 2);
        assert_eq!(mine[0].error_message, p.error_message);
    }
}
