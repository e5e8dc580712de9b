use std::sync::Arc;

use super::*;

fn event(topic: &str, seq: u64, priority: Priority) -> OutFrame {
    OutFrame {
        text: Bytes::from(format!("{topic}#{seq}")),
        event: Some(EventMeta {
            topic: Topic::parse(topic).unwrap(),
            seq,
            priority,
            published: Instant::now(),
        }),
    }
}

/// Pushes one frame per scheduler round, `rounds` times, from a task of
/// its own (a publisher); the frames gathered when `outbox` stops
/// waiting.
async fn gathered_while_publishing(outbox: Arc<Outbox>, rounds: u64) -> usize {
    gathered_while_publishing_with_pauses(outbox, rounds, 0).await
}

/// As [`gathered_while_publishing`], with `quiet` rounds without a push
/// after each push.
async fn gathered_while_publishing_with_pauses(
    outbox: Arc<Outbox>,
    publishes: u64,
    quiet: usize,
) -> usize {
    let tasks = tokio_util::task::TaskTracker::new();
    let publisher = outbox.clone();
    tasks.spawn(async move {
        for seq in 1..=publishes {
            publisher.push(event("t:a", seq, Priority::Normal));
            for _ in 0..=quiet {
                tokio::task::yield_now().await;
            }
        }
    });
    tasks.close();
    outbox.gather().await;
    let gathered = outbox.len();
    tasks.wait().await;
    gathered
}

#[test]
fn a_full_outbox_that_resyncs_on_a_gap_keeps_one_gap_marker_instead_of_closing() {
    let flood = |outbox: &Outbox| {
        (1..=50)
            .map(|n| outbox.push(event(&format!("machine:m{n}"), 1, Priority::Normal)))
            .collect::<Vec<Pushed>>()
    };
    let closing = Outbox::new(4);
    assert!(
        flood(&closing).contains(&Pushed::Closed),
        "gaps of 46 topics close it"
    );

    let resyncing = Outbox::new(4);
    resyncing.resync_on_gap();
    assert!(!flood(&resyncing).contains(&Pushed::Closed));
    let (queued, closing) = resyncing.drain();
    assert!(closing.is_none());
    let gaps = queued
        .iter()
        .filter(|q| matches!(q, Queued::One(Entry::Gap { .. })))
        .count();
    assert!((1..=5).contains(&gaps), "{gaps} gap markers");
    assert!(queued.len() <= 4 + 5, "{} entries", queued.len());
}

#[tokio::test]
async fn a_wait_for_room_ends_when_the_writer_takes_the_queue_or_the_outbox_closes() {
    let outbox = Arc::new(Outbox::new(4));
    let tasks = tokio_util::task::TaskTracker::new();
    for seq in 1..=3 {
        outbox.push(event("run:r", seq, Priority::High));
    }
    assert!(outbox.wait_for_room(1).await, "one more fits");
    let waiting = tasks.spawn({
        let outbox = outbox.clone();
        async move { outbox.wait_for_room(2).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "two more do not fit yet");
    let (taken, _) = outbox.drain();
    assert_eq!(taken.len(), 3);
    let bound = Duration::from_secs(5);
    let woken = tokio::time::timeout(bound, waiting).await;
    assert!(
        woken.unwrap().unwrap(),
        "room once the writer took the queue"
    );

    for seq in 4..=7 {
        outbox.push(event("run:r", seq, Priority::High));
    }
    let waiting = tasks.spawn({
        let outbox = outbox.clone();
        async move { outbox.wait_for_room(100).await }
    });
    tokio::task::yield_now().await;
    outbox.close(Closing::SHUTDOWN);
    let woken = tokio::time::timeout(bound, waiting).await;
    assert!(!woken.unwrap().unwrap(), "no room in a closing outbox");
}

#[tokio::test]
async fn a_batch_wakes_the_writer_once_per_drain_and_by_its_first_push_after_it() {
    use futures::FutureExt as _;
    let outbox = Outbox::new(1024);
    for seq in 1..=3 {
        outbox.push_together(event("t:a", seq, Priority::Normal));
    }
    assert!(outbox.ready().now_or_never().is_some());
    // Woken and not yet drained: a batch's later frames are left for
    // that drain, with no second wake-up.
    outbox.push_together(event("t:a", 4, Priority::Normal));
    assert!(outbox.ready().now_or_never().is_none());
    let (batch, _) = outbox.drain();
    assert_eq!(batch.len(), 4);
    // The first push after the drain wakes the writer, also while it is
    // still writing what it drained.
    outbox.push_together(event("t:a", 5, Priority::Normal));
    outbox.push_together(event("t:a", 6, Priority::Normal));
    assert!(outbox.ready().now_or_never().is_some());
    assert!(outbox.ready().now_or_never().is_none());
    assert_eq!(outbox.drain().0.len(), 2);
}

#[tokio::test]
async fn a_run_is_queued_in_order_and_each_run_wakes_the_writer() {
    use futures::FutureExt as _;
    let outbox = Outbox::new(1024);
    let run: Vec<OutFrame> = (1..=3)
        .map(|seq| event("t:a", seq, Priority::Normal))
        .collect();
    let pushed = outbox.push_run(&run);
    assert_eq!(pushed, RunPushed { taken: 3, shed: 0 });
    assert!(outbox.ready().now_or_never().is_some());
    assert!(outbox.ready().now_or_never().is_none());
    // Another run before the drain wakes the writer again, as a single
    // publish does: a writer busy writing gathers right after.
    outbox.push_run(&run[..1]);
    assert!(outbox.ready().now_or_never().is_some());
    assert_eq!(drained(&outbox), ["t:a#1", "t:a#2", "t:a#3", "t:a#1"]);
}

#[tokio::test]
async fn a_run_into_a_full_outbox_sheds_as_its_events_one_by_one_would() {
    let outbox = Outbox::new(2);
    outbox.push(event("t:a", 1, Priority::Low));
    let run = [
        event("t:a", 2, Priority::Normal),
        event("t:a", 3, Priority::Normal),
        event("t:a", 4, Priority::Low),
    ];
    // #2 fits; #3 takes the place of the low #1; #4 finds only normal
    // frames ahead of it and is shed itself.
    assert_eq!(outbox.push_run(&run), RunPushed { taken: 3, shed: 2 });
    assert_eq!(
        drained(&outbox),
        ["gap t:a 1-1", "t:a#2", "t:a#3", "gap t:a 4-4"]
    );
}

fn run_of(seqs: std::ops::RangeInclusive<u64>, priority: Priority) -> Arc<Run> {
    Run::new(seqs.map(|seq| event("t:a", seq, priority)).collect())
}

#[tokio::test]
async fn a_run_with_room_is_queued_whole_counted_by_its_frames_and_once_as_a_publish() {
    use futures::FutureExt as _;
    let outbox = Outbox::new(8);
    let pushed = outbox.push_shared_run(&run_of(1..=3, Priority::Normal));
    assert_eq!(pushed, RunPushed { taken: 3, shed: 0 });
    assert_eq!(outbox.len(), 3);
    assert_eq!(outbox.gathered(), (1, 3));
    assert!(outbox.ready().now_or_never().is_some());
    assert_eq!(drained(&outbox), ["[t:a#1 t:a#2 t:a#3]"]);
}

#[test]
fn a_run_without_room_is_queued_and_shed_frame_by_frame() {
    let outbox = Outbox::new(4);
    outbox.push(event("t:b", 1, Priority::Normal));
    outbox.push(event("t:b", 2, Priority::Normal));
    let pushed = outbox.push_shared_run(&run_of(1..=3, Priority::Normal));
    assert_eq!(pushed, RunPushed { taken: 3, shed: 1 });
    assert_eq!(
        drained(&outbox),
        ["gap t:b 1-1", "t:b#2", "t:a#1", "t:a#2", "t:a#3"]
    );
}

#[test]
fn shedding_an_event_of_a_queued_run_leaves_its_other_frames_in_place() {
    let outbox = Outbox::new(4);
    outbox.push_shared_run(&run_of(1..=3, Priority::Normal));
    outbox.push(event("t:b", 1, Priority::High));
    // Full: a high event sheds the oldest normal one, the run's first.
    assert_eq!(outbox.push(event("t:b", 2, Priority::High)), Pushed::Shed);
    assert_eq!(outbox.len(), 4);
    assert_eq!(
        drained(&outbox),
        ["gap t:a 1-1", "t:a#2", "t:a#3", "t:b#1", "t:b#2"]
    );
    // A run's low event is shed before the normal events queued before it.
    let mixed = Run::new(vec![
        event("t:a", 4, Priority::Normal),
        event("t:a", 5, Priority::Low),
        event("t:a", 6, Priority::Normal),
    ]);
    outbox.push_shared_run(&mixed);
    outbox.push(event("t:b", 3, Priority::Normal));
    assert_eq!(outbox.push(event("t:b", 4, Priority::Normal)), Pushed::Shed);
    assert_eq!(
        drained(&outbox),
        ["t:a#4", "gap t:a 5-5", "t:a#6", "t:b#3", "t:b#4"]
    );
}

#[tokio::test]
async fn a_run_stops_where_the_outbox_closes() {
    let outbox = Outbox::new(1);
    outbox.push(OutFrame::control("welcome"));
    let run = [
        event("t:a", 1, Priority::Normal),
        event("t:a", 2, Priority::Critical),
        event("t:a", 3, Priority::Normal),
    ];
    // #1 is shed; #2 cannot be, so the outbox closes; #3 is not taken.
    assert_eq!(outbox.push_run(&run), RunPushed { taken: 1, shed: 1 });
    let (entries, closing) = outbox.drain();
    assert!(entries.is_empty(), "a closing outbox drops what it held");
    assert_eq!(closing.map(|c| c.code), Some(CloseReason::TRY_AGAIN_LATER));
    assert_eq!(outbox.push_run(&run), RunPushed::default());
}

#[tokio::test]
async fn a_single_event_wakes_the_writer_again_before_the_drain() {
    use futures::FutureExt as _;
    let outbox = Outbox::new(1024);
    outbox.push(event("t:a", 1, Priority::Normal));
    assert!(outbox.ready().now_or_never().is_some());
    // The permit this leaves wakes the writer again right after the
    // write of what it is about to drain.
    outbox.push(event("t:a", 2, Priority::Normal));
    assert!(outbox.ready().now_or_never().is_some());
}

#[tokio::test]
async fn gathering_waits_while_publishes_keep_adding_frames_and_stops_when_they_pause() {
    let outbox = Arc::new(Outbox::new(1024));
    outbox.push(event("t:a", 0, Priority::Normal));
    // Three more publishes arrive, one per round: all are gathered, and
    // the round after the last one adds nothing, so gathering ends.
    assert_eq!(gathered_while_publishing(outbox.clone(), 3).await, 4);
    assert_eq!(outbox.len(), 4);
}

#[tokio::test]
async fn gathering_counts_a_run_as_one_publish() {
    let outbox = Arc::new(Outbox::new(1024));
    let run: Vec<OutFrame> = (1..=2 * GATHER_PUBLISHES as u64)
        .map(|seq| event("t:b", seq, Priority::Normal))
        .collect();
    outbox.push_run(&run);
    // More frames queued than GATHER_PUBLISHES, from one publish: the
    // writer still waits for the publishes arriving after it.
    let gathered = gathered_while_publishing(outbox, 3).await;
    assert_eq!(gathered, 2 * GATHER_PUBLISHES + 3);
}

#[tokio::test]
async fn gathering_stops_once_half_the_queue_is_full() {
    let outbox = Arc::new(Outbox::new(8));
    let run: Vec<OutFrame> = (1..=4)
        .map(|seq| event("t:b", seq, Priority::Normal))
        .collect();
    outbox.push_run(&run);
    // One publish, but 4 of 8 frames queued: written at once.
    assert_eq!(gathered_while_publishing(outbox, 1000).await, 4);
}

#[tokio::test]
async fn gathering_waits_through_one_quiet_round() {
    let outbox = Arc::new(Outbox::new(1024));
    outbox.push(event("t:a", 0, Priority::Normal));
    // A publish every other round: each quiet round is followed by
    // another publish, so all three are gathered.
    assert_eq!(gathered_while_publishing_with_pauses(outbox, 3, 1).await, 4);
}

#[tokio::test]
async fn gathering_stops_after_two_quiet_rounds() {
    let outbox = Arc::new(Outbox::new(1024));
    outbox.push(event("t:a", 0, Priority::Normal));
    // The second publish would come after two quiet rounds: the
    // writer has written by then.
    assert_eq!(gathered_while_publishing_with_pauses(outbox, 3, 2).await, 2);
}

#[tokio::test]
async fn gathering_on_a_quiet_queue_returns_with_what_was_queued() {
    let outbox = Arc::new(Outbox::new(1024));
    outbox.push(event("t:a", 1, Priority::Normal));
    assert_eq!(gathered_while_publishing(outbox, 0).await, 1);
}

#[tokio::test]
async fn gathering_is_bounded_by_rounds_and_by_publishes() {
    // Publishing that never pauses is written after GATHER_ROUNDS rounds.
    let outbox = Arc::new(Outbox::new(1024));
    outbox.push(event("t:a", 0, Priority::Normal));
    let gathered = gathered_while_publishing(outbox, 1000).await;
    assert_eq!(gathered, 1 + GATHER_ROUNDS);
    // A queue that already holds enough is written at once.
    let outbox = Arc::new(Outbox::new(1024));
    for seq in 1..=GATHER_PUBLISHES as u64 {
        outbox.push(event("t:a", seq, Priority::Normal));
    }
    assert_eq!(
        gathered_while_publishing(outbox, 1000).await,
        GATHER_PUBLISHES
    );
}

/// A socket that takes frames as `answer` says, and keeps what it took.
#[derive(Debug)]
struct Socket {
    answer: Mutex<Wrote>,
    took: Arc<Mutex<Vec<String>>>,
}

impl DirectWrite for Socket {
    fn try_write(&self, frame: &OutFrame) -> Wrote {
        let answer = *self.answer.lock();
        if answer != Wrote::Nothing {
            self.took
                .lock()
                .push(String::from_utf8_lossy(&frame.text).into_owned());
        }
        answer
    }
}

/// An outbox whose socket answers `answer`, on a hub of `pace`; what
/// the socket took.
fn direct(outbox: &Outbox, pace: &Pace, answer: Wrote) -> Arc<Mutex<Vec<String>>> {
    let took = Arc::new(Mutex::new(Vec::new()));
    let socket = Socket {
        answer: Mutex::new(answer),
        took: took.clone(),
    };
    outbox.set_direct(Some(Direct {
        writer: Box::new(socket),
        pace: pace.clone(),
    }));
    took
}

#[test]
fn a_quiet_hub_writes_a_live_frame_straight_to_an_idle_socket() {
    let (outbox, pace) = (Outbox::new(8), Pace::default());
    let took = direct(&outbox, &pace, Wrote::All);
    assert_eq!(
        outbox.deliver(&event("t:a", 1, Priority::Normal), true),
        Pushed::Written
    );
    assert_eq!(*took.lock(), ["t:a#1"]);
    assert_eq!(outbox.len(), 0);
    assert!(
        pace.quiet_at(a_while_after(&pace)),
        "a frame written at once leaves nothing waiting"
    );
}

#[test]
fn a_frame_never_overtakes_one_queued_or_being_written_before_it() {
    let (outbox, pace) = (Outbox::new(8), Pace::default());
    let took = direct(&outbox, &pace, Wrote::All);
    outbox.push(OutFrame::control("reply"));
    assert!(!pace.quiet(), "a connection with a queued frame is waiting");
    assert_eq!(
        outbox.deliver(&event("t:a", 1, Priority::Normal), true),
        Pushed::Queued
    );
    // The writer takes both; until it has written them, still queued.
    assert_eq!(drained(&outbox), ["reply", "t:a#1"]);
    assert_eq!(
        outbox.deliver(&event("t:a", 2, Priority::Normal), true),
        Pushed::Queued
    );
    assert_eq!(drained(&outbox), ["t:a#2"]);
    outbox.written();
    assert_eq!(
        outbox.deliver(&event("t:a", 3, Priority::Normal), true),
        Pushed::Written
    );
    assert_eq!(*took.lock(), ["t:a#3"]);
}

#[test]
fn frames_queue_on_a_busy_hub_and_when_the_socket_would_wait() {
    let (outbox, pace) = (Outbox::new(8), Pace::default());
    let took = direct(&outbox, &pace, Wrote::Nothing);
    assert_eq!(
        outbox.deliver(&event("t:a", 1, Priority::Normal), true),
        Pushed::Queued
    );
    let (outbox, pace) = (Outbox::new(8), Pace::default());
    let _ = direct(&outbox, &pace, Wrote::All);
    assert_eq!(
        outbox.deliver(&event("t:a", 1, Priority::Normal), false),
        Pushed::Queued
    );
    assert!(took.lock().is_empty());
}

#[test]
fn a_frame_the_socket_took_in_part_wakes_the_writer_and_holds_the_next_back() {
    use futures::FutureExt as _;
    let (outbox, pace) = (Outbox::new(8), Pace::default());
    let _ = direct(&outbox, &pace, Wrote::Part);
    assert_eq!(
        outbox.deliver(&event("t:a", 1, Priority::Normal), true),
        Pushed::Written
    );
    assert!(
        outbox.ready().now_or_never().is_some(),
        "the writer must flush the rest"
    );
    assert!(!pace.quiet());
    assert_eq!(
        outbox.deliver(&event("t:a", 2, Priority::Normal), true),
        Pushed::Queued
    );
    assert_eq!(drained(&outbox), ["t:a#2"]);
    outbox.written();
    // Nothing waits now, but the hub was busy just now.
    assert!(!pace.quiet());
}

#[test]
fn a_connection_that_ends_while_waiting_no_longer_holds_the_hub_busy() {
    let (outbox, pace) = (Outbox::new(8), Pace::default());
    let _ = direct(&outbox, &pace, Wrote::All);
    outbox.push(OutFrame::control("reply"));
    outbox.set_direct(None);
    assert!(pace.quiet_at(a_while_after(&pace)));
}

#[test]
fn a_hub_is_quiet_only_a_while_after_its_last_fan_out() {
    let pace = Pace::default();
    let ended = 10 * busy_nanos();
    pace.fanned_out_at(ended);
    assert!(!pace.quiet_at(ended));
    assert!(!pace.quiet_at(ended + busy_nanos() - 1));
    assert!(pace.quiet_at(ended + busy_nanos()));
    // A fan-out that ended earlier, told later, does not shorten it.
    pace.fanned_out_at(ended - busy_nanos() / 2);
    assert!(!pace.quiet_at(ended + busy_nanos() - 1));
}

#[test]
fn a_hub_that_keeps_up_with_a_publish_a_millisecond_writes_straight_away() {
    // Each publication's fan-out takes 0.45 ms of the millisecond
    // between publications (1000 publishes/s to 100 subscribers).
    let pace = Pace::default();
    let ms = 1_000_000;
    for publication in 1..=3 {
        let started = publication * ms;
        assert!(
            pace.quiet_at(started),
            "publication {publication} found the hub busy"
        );
        pace.fanned_out_at(started + 450_000);
    }
    // A request already waiting when the last fan-out ended meets a busy hub.
    assert!(!pace.quiet_at(3 * ms + 500_000));
}

/// [`BUSY`] after now, on `pace`'s clock.
fn a_while_after(pace: &Pace) -> u64 {
    pace.now() + busy_nanos()
}

/// What the writer would take, a run queued whole in brackets.
fn drained(outbox: &Outbox) -> Vec<String> {
    let text = |f: &OutFrame| String::from_utf8_lossy(&f.text).into_owned();
    let (entries, _) = outbox.drain();
    entries
        .into_iter()
        .map(|queued| match queued {
            Queued::One(Entry::Frame(f)) => text(&f),
            Queued::One(Entry::Gap {
                topic,
                from_seq,
                to_seq,
            }) => format!("gap {topic} {from_seq}-{to_seq}"),
            Queued::Run(run) => {
                let texts: Vec<String> = run.frames.iter().map(text).collect();
                format!("[{}]", texts.join(" "))
            }
        })
        .collect()
}

#[test]
fn a_full_queue_sheds_the_oldest_low_event_and_marks_the_gap_in_place() {
    let outbox = Outbox::new(3);
    outbox.push(event("t:a", 1, Priority::Normal));
    outbox.push(event("t:a", 2, Priority::Low));
    outbox.push(event("t:a", 3, Priority::Normal));
    assert_eq!(outbox.push(event("t:a", 4, Priority::Normal)), Pushed::Shed);
    assert_eq!(drained(&outbox), ["t:a#1", "gap t:a 2-2", "t:a#3", "t:a#4"]);
}

#[test]
fn normal_events_are_shed_only_when_no_low_event_is_queued() {
    let outbox = Outbox::new(2);
    outbox.push(event("t:a", 1, Priority::Normal));
    outbox.push(event("t:a", 2, Priority::Normal));
    assert_eq!(outbox.push(event("t:a", 3, Priority::High)), Pushed::Shed);
    assert_eq!(outbox.push(event("t:a", 4, Priority::High)), Pushed::Shed);
    assert_eq!(drained(&outbox), ["gap t:a 1-2", "t:a#3", "t:a#4"]);
}

#[test]
fn a_low_event_that_finds_the_queue_full_of_higher_ones_is_itself_shed() {
    let outbox = Outbox::new(1);
    outbox.push(event("t:a", 1, Priority::High));
    assert_eq!(outbox.push(event("t:a", 2, Priority::Low)), Pushed::Shed);
    assert_eq!(outbox.push(event("t:a", 3, Priority::Low)), Pushed::Shed);
    assert_eq!(drained(&outbox), ["t:a#1", "gap t:a 2-3"]);
}

#[test]
fn a_high_event_that_cannot_be_queued_closes_with_1013() {
    let outbox = Outbox::new(1);
    outbox.push(event("t:a", 1, Priority::Critical));
    assert_eq!(outbox.push(event("t:a", 2, Priority::High)), Pushed::Closed);
    let (entries, closing) = outbox.drain();
    let closing = closing.expect("closing");
    assert_eq!(closing.code, CloseReason::TRY_AGAIN_LATER);
    assert!(
        entries.is_empty(),
        "an overload close drops what was queued"
    );
}

#[test]
fn gaps_of_different_topics_do_not_merge() {
    let outbox = Outbox::new(2);
    outbox.push(event("t:a", 1, Priority::Low));
    outbox.push(event("t:b", 1, Priority::Low));
    outbox.push(event("t:c", 1, Priority::Normal));
    outbox.push(event("t:c", 2, Priority::Normal));
    assert_eq!(
        drained(&outbox),
        ["gap t:a 1-1", "gap t:b 1-1", "t:c#1", "t:c#2"]
    );
}

#[test]
fn a_slow_connection_on_interleaved_topics_keeps_one_gap_marker_per_topic_and_stays_open() {
    let outbox = Outbox::new(4);
    // Far more than a queue's worth of shed events, two topics taking
    // turns: each shed seq joins its topic's marker.
    for seq in 1..=40 {
        for topic in ["t:a", "t:b"] {
            assert_ne!(
                outbox.push(event(topic, seq, Priority::Normal)),
                Pushed::Closed
            );
        }
    }
    assert_eq!(
        drained(&outbox),
        [
            "gap t:a 1-38",
            "gap t:b 1-38",
            "t:a#39",
            "t:b#39",
            "t:a#40",
            "t:b#40"
        ]
    );
}

#[test]
fn a_shed_seq_never_joins_a_marker_an_event_of_its_topic_follows() {
    let outbox = Outbox::new(3);
    outbox.push(event("t:a", 1, Priority::Normal));
    outbox.push(event("t:a", 2, Priority::High));
    outbox.push(event("t:a", 3, Priority::Normal));
    // 1 is shed; then 3, which the high 2 separates from 1's marker.
    assert_eq!(outbox.push(event("t:a", 4, Priority::High)), Pushed::Shed);
    assert_eq!(outbox.push(event("t:a", 5, Priority::High)), Pushed::Shed);
    assert_eq!(
        drained(&outbox),
        ["gap t:a 1-1", "t:a#2", "gap t:a 3-3", "t:a#4", "t:a#5"]
    );
}

#[test]
fn a_shed_seq_never_joins_a_marker_a_control_frame_follows() {
    let outbox = Outbox::new(3);
    outbox.push(event("t:a", 1, Priority::Normal));
    outbox.push(OutFrame::control("subscribed t:a"));
    outbox.push(event("t:a", 5, Priority::Normal));
    // 1 is shed; then 5: the `subscribed` between stays before its marker.
    assert_eq!(outbox.push(event("t:b", 1, Priority::High)), Pushed::Shed);
    assert_eq!(outbox.push(event("t:b", 2, Priority::High)), Pushed::Shed);
    assert_eq!(
        drained(&outbox),
        [
            "gap t:a 1-1",
            "subscribed t:a",
            "gap t:a 5-5",
            "t:b#1",
            "t:b#2"
        ]
    );
}

#[test]
fn folding_markers_sheds_only_what_lies_between_them_and_counts_it() {
    let mut state = State::default();
    let gap = |seq| {
        Queued::One(Entry::Gap {
            topic: Topic::parse("t:a").unwrap(),
            from_seq: seq,
            to_seq: seq,
        })
    };
    let frame = |seq, priority| Queued::One(Entry::Frame(event("t:a", seq, priority)));
    state.queue = VecDeque::from([
        gap(1),
        frame(2, Priority::Normal),
        gap(3),
        frame(4, Priority::High),
        gap(5),
        frame(6, Priority::Normal),
    ]);
    state.gaps = 3;
    state.frames = 3;
    state.normal = 2;
    state.compact_gaps();
    let shown: Vec<String> = state
        .queue
        .iter()
        .map(|queued| match queued {
            Queued::One(Entry::Gap {
                from_seq, to_seq, ..
            }) => format!("gap {from_seq}-{to_seq}"),
            Queued::One(Entry::Frame(f)) => String::from_utf8_lossy(&f.text).into_owned(),
            Queued::Run(_) => "run".to_owned(),
        })
        .collect();
    // 2 lay between markers and goes; the high 4 ends the first marker's
    // reach; 6 comes after the last marker and stays.
    assert_eq!(shown, ["gap 1-3", "t:a#4", "gap 5-5", "t:a#6"]);
    assert_eq!(
        (state.gaps, state.frames, state.normal, state.folded),
        (2, 2, 1, 1)
    );
}

#[test]
fn low_and_normal_events_of_one_topic_shed_in_turn_keep_one_marker() {
    let outbox = Outbox::new(4);
    for seq in 1..=30 {
        let priority = if seq % 2 == 0 {
            Priority::Low
        } else {
            Priority::Normal
        };
        assert_ne!(outbox.push(event("t:a", seq, priority)), Pushed::Closed);
    }
    let drained = drained(&outbox);
    assert!(drained.len() <= 5, "{drained:?}");
    assert_eq!(drained.last().map(String::as_str), Some("t:a#30"));
}

#[test]
fn a_flushing_close_keeps_what_was_queued() {
    let outbox = Outbox::new(4);
    outbox.push(OutFrame::control("bye"));
    outbox.close(Closing::SHUTDOWN);
    assert_eq!(outbox.push(OutFrame::control("late")), Pushed::Closed);
    assert_eq!(drained(&outbox), ["bye"]);
}
