//! The test MinIO behaves as S3 does for what the ingester needs: put, list, get of gzip objects.

use std::io::{Read, Write};

use aws_sdk_s3::primitives::ByteStream;
use drainpipe_tests::env::TestEnv;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("gzip write");
    encoder.finish().expect("gzip finish")
}

#[tokio::test]
async fn gzip_json_lines_object_round_trips() {
    let env = TestEnv::require();
    let s3 = env.s3_client();

    s3.head_bucket()
        .bucket(&env.bucket)
        .send()
        .await
        .expect("the test bucket exists");

    let lines = concat!(
        r#"{"app":"smoke-app","proc_id":"web.1","message":"Hello from web.1"}"#,
        "\n",
        r#"{"app":"smoke-app","proc_id":"router","status":200,"message":"at=info method=GET path=\"/\""}"#,
        "\n",
    );
    let body = gzip(lines.as_bytes());
    let prefix = format!("smoke/{}/smoke-app/2026/06/17/", uuid::Uuid::new_v4());
    let key = format!("{prefix}1781697600000-{}.json.gz", uuid::Uuid::new_v4());

    s3.put_object()
        .bucket(&env.bucket)
        .key(&key)
        .content_type("application/x-ndjson")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("put object");

    let listed = s3
        .list_objects_v2()
        .bucket(&env.bucket)
        .prefix(&prefix)
        .send()
        .await
        .expect("list objects");
    let objects: Vec<(String, i64)> = listed
        .contents()
        .iter()
        .map(|o| {
            (
                o.key().unwrap_or_default().to_string(),
                o.size().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(objects, [(key.clone(), body.len() as i64)]);

    let got = s3
        .get_object()
        .bucket(&env.bucket)
        .key(&key)
        .send()
        .await
        .expect("get object");
    assert_eq!(got.content_type(), Some("application/x-ndjson"));
    let stored = got.body.collect().await.expect("read body").into_bytes();
    assert_eq!(
        stored.as_ref(),
        body.as_slice(),
        "the object is stored as uploaded, still gzip"
    );

    let mut text = String::new();
    GzDecoder::new(stored.as_ref())
        .read_to_string(&mut text)
        .expect("gunzip");
    assert_eq!(text, lines);
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a line")).expect("json line");
    assert_eq!(first["proc_id"], "web.1");

    s3.delete_object()
        .bucket(&env.bucket)
        .key(&key)
        .send()
        .await
        .expect("delete object");
}

#[tokio::test]
async fn missing_object_is_no_such_key() {
    let env = TestEnv::require();
    let s3 = env.s3_client();
    let err = s3
        .get_object()
        .bucket(&env.bucket)
        .key(format!("smoke/{}/absent.json.gz", uuid::Uuid::new_v4()))
        .send()
        .await
        .expect_err("an absent key cannot be read");
    assert!(
        err.as_service_error().is_some_and(|e| e.is_no_such_key()),
        "expected NoSuchKey, got {err:?}"
    );
}
