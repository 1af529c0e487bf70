use super::*;
use bytes::BufMut;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;

/// A request read in place, decoded whole for comparison.
fn full(request: Request) -> DiscoveryRequest {
    request.to_discovery_request().unwrap()
}

fn framed(request: &DiscoveryRequest) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(0);
    out.put_u32(request.encoded_len() as u32);
    request.encode(&mut out).unwrap();
    out.freeze()
}

fn limits(first: usize, max: usize, budget: usize) -> RequestLimits {
    RequestLimits {
        first,
        max,
        budget: RequestBudget::new(budget, Gauge::default()),
    }
}

fn named(type_url: &str, names: usize) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: (0..names).map(|i| format!("name-{i}")).collect(),
        ..Default::default()
    }
}

#[test]
fn requests_split_across_chunks_and_packed_together_are_decoded() {
    let (a, b, c) = (named("a", 0), named("b", 100), named("c", 5000));
    let mut wire = framed(&a).to_vec();
    wire.extend_from_slice(&framed(&b));
    let largest = framed(&c).len() as u64;
    wire.extend_from_slice(&framed(&c));
    for chunk_size in [1, 3, 5, 7, 1000, 16 * 1024, wire.len()] {
        let limits = limits(1 << 20, 1 << 20, 1 << 20);
        let mut decoder = limits.decoder();
        let mut got = Vec::new();
        for chunk in wire.chunks(chunk_size) {
            decoder.push(Bytes::copy_from_slice(chunk));
            while let Some(request) = decoder.next_request().unwrap().map(full) {
                got.push(request);
            }
            assert!(limits.budget.in_use() <= allocation_size(largest as usize) as u64);
        }
        assert_eq!(
            got,
            [a.clone(), b.clone(), c.clone()],
            "chunks of {chunk_size}"
        );
        decoder.finish().unwrap();
        assert_eq!(
            decoder.partial.capacity(),
            0,
            "no buffer kept between messages"
        );
        assert_eq!(limits.budget.in_use(), 0, "budget given back");
    }
}

#[test]
fn a_message_whole_in_its_chunk_is_decoded_without_touching_the_budget() {
    let limits = limits(1 << 20, 1 << 20, 0);
    let mut decoder = limits.decoder();
    let request = named("a", 10);
    decoder.push(framed(&request));
    assert_eq!(decoder.next_request().unwrap().map(full), Some(request));
    assert!(decoder.next_request().unwrap().map(full).is_none());
    decoder.finish().unwrap();
}

#[test]
fn the_first_request_has_its_own_small_limit_and_later_ones_the_general_one() {
    let limits = limits(100, 10_000, 1 << 20);
    // The attack: a prefix near the general limit and most of the body, then nothing.
    let mut decoder = limits.decoder();
    let mut wire = BytesMut::new();
    wire.put_u8(0);
    wire.put_u32(9_000);
    wire.put_bytes(0, 8_000);
    decoder.push(wire.freeze());
    let err = decoder.next_request().unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::FirstTooLarge {
                len: 9_000,
                limit: 100
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_status().code(), tonic::Code::OutOfRange);
    assert!(
        err.to_string().contains("--max-first-request-bytes"),
        "{err}"
    );
    assert_eq!(limits.budget.in_use(), 0, "nothing of it was buffered");

    // A prefix split from its body is refused as soon as it is complete.
    let mut decoder = limits.decoder();
    decoder.push(Bytes::from_static(&[0, 0, 0]));
    assert!(decoder.next_request().unwrap().map(full).is_none());
    decoder.push(Bytes::from_static(&[0x23, 0x28, 0, 0]));
    assert!(matches!(
        decoder.next_request().unwrap_err(),
        RequestError::FirstTooLarge { len: 9_000, .. }
    ));

    let mut decoder = limits.decoder();
    decoder.push(framed(&named("first", 1)));
    decoder.next_request().unwrap().map(full).unwrap();
    let later = named("later", 200);
    assert!(framed(&later).len() > 100);
    decoder.push(framed(&later));
    assert_eq!(decoder.next_request().unwrap().map(full), Some(later));
    let mut wire = BytesMut::new();
    wire.put_u8(0);
    wire.put_u32(10_001);
    decoder.push(wire.freeze());
    let err = decoder.next_request().unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::TooLarge {
                len: 10_001,
                limit: 10_000
            }
        ),
        "{err}"
    );
}

#[test]
fn partly_received_messages_share_one_budget_and_the_stream_over_it_is_refused() {
    let limits = limits(64 * 1024, 64 * 1024, 100 * 1024);
    let partial = |len: u32, sent: usize| {
        let mut wire = BytesMut::new();
        wire.put_u8(0);
        wire.put_u32(len);
        wire.put_bytes(0, sent);
        wire.freeze()
    };
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut decoder = limits.decoder();
        decoder.push(partial(40_000, 39_000));
        assert!(decoder.next_request().unwrap().map(full).is_none());
        stalled.push(decoder);
    }
    let held = limits.budget.in_use();
    assert!((78_000..=100 * 1024).contains(&held), "{held}");
    let mut third = limits.decoder();
    third.push(partial(40_000, 39_000));
    let err = third.next_request().unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::BufferFull {
                budget: 102_400,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_status().code(), tonic::Code::ResourceExhausted);
    assert!(err.to_string().contains("retry with backoff"), "{err}");
    assert_eq!(
        limits.budget.in_use(),
        held,
        "the refused stream holds nothing"
    );

    // A stalled stream that goes away gives its share back.
    drop(stalled.pop());
    let mut fourth = limits.decoder();
    fourth.push(partial(40_000, 39_000));
    assert!(fourth.next_request().unwrap().map(full).is_none());
    drop((stalled, fourth));
    assert_eq!(limits.budget.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_finds_the_budget_full_waits_for_room_and_then_goes_on() {
    let limits = limits(64 * 1024, 64 * 1024, 100 * 1024);
    // Streams past their first request (the gate): a stream's first request never waits.
    let request = framed(&named("later", 4000));
    assert!(request.len() > 40_000 && request.len() < 64 * 1024);
    let past_the_gate = || {
        let mut decoder = limits.decoder();
        decoder.push(framed(&named("first", 1)));
        decoder.next_request().unwrap().unwrap();
        decoder
    };
    let mut first = limits.decoder();
    first.push(request.slice(..39_000));
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut decoder = past_the_gate();
        decoder.push(request.slice(..39_000));
        assert!(decoder.next_request().unwrap().is_none());
        holders.push(decoder);
    }
    let held = limits.budget.in_use();
    let Err(RequestError::BufferFull { wanted, .. }) = first.next_request() else {
        panic!("the budget is full");
    };
    assert!(
        !first.wait_for_room(wanted).await,
        "a first request is refused at once"
    );
    let mut third = past_the_gate();
    third.push(request.slice(..39_000));
    let Err(RequestError::BufferFull { wanted, .. }) = third.next_request() else {
        panic!("the budget is full");
    };
    assert_eq!(limits.budget.in_use(), held, "nothing taken by the refusal");
    // Waits while the budget is full...
    let waiting = tokio::spawn(async move {
        let got = third.wait_for_room(wanted).await;
        (got, third)
    });
    tokio::time::sleep(BUDGET_WAIT / 2).await;
    assert!(!waiting.is_finished(), "no room yet");
    // ...and gets the room a finished stream gives back; then reads on where it stopped.
    drop(holders.pop());
    let (got, mut third) = waiting.await.unwrap();
    assert!(got);
    assert!(third.next_request().unwrap().is_none());
    assert_eq!(third.partial.len(), 39_000, "the chunk it had stopped at");
    drop(holders);
    third.push(request.slice(39_000..));
    assert_eq!(
        full(third.next_request().unwrap().unwrap()).type_url,
        "later"
    );
    drop((third, first));
    assert_eq!(limits.budget.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_wait_for_room_is_bounded_in_time_and_in_bytes() {
    let limits = limits(64 * 1024, 64 * 1024, 100 * 1024);
    let _held = limits.budget.charge(90 * 1024).unwrap();
    // Bytes waited for are bounded by the budget: past it, refused at once.
    let started = tokio::time::Instant::now();
    assert!(limits.budget.wait_for(101 * 1024).await.is_none());
    let first = tokio::spawn({
        let budget = limits.budget.clone();
        async move { budget.wait_for(60 * 1024).await.is_some() }
    });
    tokio::task::yield_now().await;
    assert!(
        limits.budget.wait_for(60 * 1024).await.is_none(),
        "120 KiB would be waited for"
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
    // In time: refused after BUDGET_WAIT.
    assert!(!first.await.unwrap());
    assert!(started.elapsed() >= BUDGET_WAIT);
    assert_eq!(limits.budget.in_use(), 90 * 1024);

    // A wait whose stream goes away gives its place in the queue back.
    let gone = tokio::spawn({
        let budget = limits.budget.clone();
        async move { budget.wait_for(60 * 1024).await.is_some() }
    });
    tokio::task::yield_now().await;
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    let again = tokio::time::Instant::now();
    assert!(limits.budget.wait_for(60 * 1024).await.is_none());
    assert!(
        again.elapsed() >= BUDGET_WAIT,
        "waited its turn, not refused at once as if the aborted wait still counted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_later_request_takes_its_whole_size_before_any_wait_and_one_over_the_budget_is_refused_at_once(
) {
    let limits = limits(1 << 20, 2 << 20, 1 << 20);
    let past_the_gate = || {
        let mut decoder = limits.decoder();
        decoder.push(framed(&named("first", 1)));
        decoder.next_request().unwrap().unwrap();
        decoder
    };
    // ~700 KB: charged whole at its first chunk, so it never grows (nor waits) while it
    // holds part of the budget.
    let large = framed(&named("later", 54_000));
    assert!(large.len() > 600_000 && large.len() < 800_000);
    let mut holder = past_the_gate();
    holder.push(large.slice(..300_000));
    assert!(holder.next_request().unwrap().is_none());
    assert_eq!(
        limits.budget.in_use(),
        allocation_size(large.len() - 5) as u64
    );
    // Another one finds the budget full while it holds nothing.
    let mut second = past_the_gate();
    second.push(large.slice(..300_000));
    let Err(RequestError::BufferFull { wanted, .. }) = second.next_request() else {
        panic!("the budget is full");
    };
    assert_eq!(wanted, allocation_size(large.len() - 5) as u64);
    drop(holder);
    assert!(second.wait_for_room(wanted).await);
    second.push(large.slice(300_000..));
    assert_eq!(
        full(second.next_request().unwrap().unwrap()).type_url,
        "later"
    );
    drop(second);
    // A request larger than the whole budget can never fit: refused without a wait.
    let small = limits_budget(100 * 1024);
    let mut decoder = small.decoder();
    decoder.push(framed(&named("first", 1)));
    decoder.next_request().unwrap().unwrap();
    decoder.push(framed(&named("later", 12_000)).slice(..50_000));
    let Err(RequestError::BufferFull { wanted, .. }) = decoder.next_request() else {
        panic!("over the budget");
    };
    let started = tokio::time::Instant::now();
    assert!(!decoder.wait_for_room(wanted).await);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(small.budget.in_use(), 0);
}

fn limits_budget(budget: usize) -> RequestLimits {
    limits(1 << 20, 2 << 20, budget)
}

#[test]
fn compressed_garbled_and_truncated_requests_are_refused() {
    let limits = limits(10, 10, 1024);
    let mut decoder = limits.decoder();
    decoder.push(Bytes::from_static(&[1, 0, 0, 0, 1, 0]));
    let err = decoder.next_request().unwrap_err();
    assert_eq!(err.to_status().code(), tonic::Code::Unimplemented);

    let mut decoder = limits.decoder();
    decoder.push(Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]));
    let err = decoder.next_request().unwrap_err();
    assert_eq!(err.to_status().code(), tonic::Code::InvalidArgument);
    assert!(err.to_string().contains("malformed DiscoveryRequest"));

    let mut decoder = limits.decoder();
    decoder.push(Bytes::from_static(&[0, 0, 0, 0, 2, 0x0a]));
    assert!(decoder.next_request().unwrap().map(full).is_none());
    let err = decoder.finish().unwrap_err();
    assert_eq!(err.to_status().code(), tonic::Code::InvalidArgument);
    drop(decoder);
    assert_eq!(limits.budget.in_use(), 0);
}

#[test]
fn the_budget_counts_what_the_allocator_takes() {
    assert_eq!(allocation_size(100), 100);
    assert_eq!(allocation_size(5_000), 5_120);
    assert_eq!(allocation_size(65_477), 65_536);
    assert_eq!(allocation_size(70_000), 80 * 1024);
    assert_eq!(allocation_size(4 * 1024 * 1024 - 1019), 4 * 1024 * 1024);
}

#[test]
fn a_later_request_across_chunks_is_assembled_in_one_buffer_of_its_size() {
    let limits = limits(1 << 20, 1 << 20, 1 << 20);
    let mut decoder = limits.decoder();
    // The first request, split: grows as its bytes arrive.
    let first = framed(&named("first", 2000));
    decoder.push(first.slice(..20_000));
    assert!(decoder.next_request().unwrap().is_none());
    assert!(
        limits.budget.in_use() < allocation_size(first.len()) as u64,
        "a first request is charged as it arrives"
    );
    decoder.push(first.slice(20_000..));
    decoder.next_request().unwrap().unwrap();
    // A later one (an ACK naming many assignments, ~60 KB): its full size at once.
    let ack = framed(&named("ack", 5000));
    assert!(ack.len() > 16 * 1024);
    decoder.push(ack.slice(..16 * 1024));
    assert!(decoder.next_request().unwrap().is_none());
    let capacity = decoder.partial.capacity();
    assert!(capacity >= ack.len() - 5, "{capacity}");
    assert_eq!(
        limits.budget.in_use(),
        allocation_size(ack.len() - 5) as u64
    );
    decoder.push(ack.slice(16 * 1024..));
    assert_eq!(
        decoder.next_request().unwrap().map(full),
        Some(named("ack", 5000))
    );
    assert_eq!(limits.budget.in_use(), 0);
}
