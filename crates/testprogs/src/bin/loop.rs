//! `loop`: a counter incremented every 10 ms, kept in three places (a static,
//! the stack and the heap) that must agree and keep advancing after restore.

use std::sync::atomic::{AtomicU64, Ordering};

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn main() {
    let args = start();
    let mut on_stack: u64 = 0;
    let mut on_heap: Box<u64> = Box::new(0);
    let tick = |stack: &mut u64, heap: &mut u64| {
        COUNTER.fetch_add(1, Ordering::SeqCst);
        *stack += 1;
        *heap += 1;
    };
    for _ in 0..3 {
        tick(&mut on_stack, &mut on_heap);
        sleep_ms(10);
    }
    let at_ready = COUNTER.load(Ordering::SeqCst);
    ready(&args);
    while !term_requested() {
        tick(&mut on_stack, &mut on_heap);
        sleep_ms(10);
    }
    let verdict = (|| {
        let c1 = COUNTER.load(Ordering::SeqCst);
        ensure!(
            c1 == on_stack && c1 == *on_heap,
            "copies disagree: static {c1}, stack {on_stack}, heap {}",
            *on_heap
        );
        ensure!(
            c1 > at_ready,
            "counter {c1} not above its value at ready {at_ready}"
        );
        for _ in 0..10 {
            tick(&mut on_stack, &mut on_heap);
            sleep_ms(10);
        }
        let c2 = COUNTER.load(Ordering::SeqCst);
        ensure!(c2 == c1 + 10, "counter went from {c1} to {c2} in 10 ticks");
        Ok(())
    })();
    finish(&args, verdict)
}
