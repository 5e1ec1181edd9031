//! An in-memory [`FrameLink`] pair that behaves like two AF_XDP sockets
//! joined by a lossy wire: a frame pool like a UMEM, TX frames that stay in
//! flight until a later `flush` completes them, a bounded RX queue, and
//! seeded fault injection (drop, duplicate, corrupt, reorder).

use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use super::{
    frame,
    link::{FrameId, FrameLink},
};

/// Probabilities (0.0..=1.0) of what the wire does to each frame it carries.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    pub corrupt: f64,
    pub reorder: f64,
    pub seed: u64,
}

/// What the wire did, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireCounts {
    pub carried: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub reordered: u64,
    /// Dropped because the receiver's queue was full.
    pub overflowed: u64,
}

/// One transmission seen by a link: the frame buffer used and, when the
/// frame parses, its kind and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxRecord {
    pub id: FrameId,
    pub kind: Option<u8>,
    pub session: u32,
    pub seq: u32,
}

struct WireState {
    /// Frames waiting at each node.
    rx: Vec<VecDeque<Vec<u8>>>,
    /// What the wire did to what each node transmitted.
    counts: Vec<WireCounts>,
    /// Each node's UDP port, for routing in a star (0: none).
    ports: Vec<u16>,
}

struct Wire {
    state: Mutex<WireState>,
    ready: Condvar,
}

impl WireState {
    fn route(&self, from: usize, default_peer: usize, bytes: &[u8]) -> usize {
        let port = match bytes.get(36..38) {
            Some(p) => u16::from_be_bytes([p[0], p[1]]),
            None => return default_peer,
        };
        (0..self.ports.len())
            .find(|&n| n != from && self.ports[n] != 0 && self.ports[n] == port)
            .unwrap_or(default_peer)
    }
}

/// splitmix64: small, seedable, good enough to draw faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

pub struct MemLink {
    wire: Arc<Wire>,
    node: usize,
    /// Where frames go that are addressed to no known port.
    default_peer: usize,
    frame_size: usize,
    pool: Vec<u8>,
    free: Vec<u32>,
    allocated: Vec<bool>,
    in_flight: Vec<bool>,
    /// Queued by `transmit`, put on the wire by the next `flush`.
    queued: Vec<(FrameId, usize)>,
    /// On the wire; completed by the `flush` after that.
    completing: Vec<FrameId>,
    tx_ring: usize,
    rx_capacity: usize,
    faults: Faults,
    rng: Rng,
    held: Option<Vec<u8>>,
    log: Arc<Mutex<Vec<TxRecord>>>,
}

impl MemLink {
    fn nodes(frame_size: usize, frames: usize, ports: Vec<u16>) -> Vec<MemLink> {
        let n = ports.len();
        let wire = Arc::new(Wire {
            state: Mutex::new(WireState {
                rx: (0..n).map(|_| VecDeque::new()).collect(),
                counts: vec![WireCounts::default(); n],
                ports,
            }),
            ready: Condvar::new(),
        });
        (0..n)
            .map(|node| MemLink {
                wire: wire.clone(),
                node,
                default_peer: if node == 0 { 1 } else { 0 },
                frame_size,
                pool: vec![0; frame_size * frames],
                free: (0..frames as u32).rev().collect(),
                allocated: vec![false; frames],
                in_flight: vec![false; frames],
                queued: Vec::with_capacity(frames),
                completing: Vec::with_capacity(frames),
                tx_ring: frames,
                rx_capacity: 4 * frames,
                faults: Faults::default(),
                rng: Rng(0),
                held: None,
                log: Arc::new(Mutex::new(Vec::new())),
            })
            .collect()
    }

    /// Two connected links, each with `frames` TX buffers of `frame_size`
    /// bytes, a TX ring of `frames` entries and an RX queue of `4 * frames`.
    pub fn pair(frame_size: usize, frames: usize) -> (MemLink, MemLink) {
        let mut v = MemLink::nodes(frame_size, frames, vec![0, 0]);
        let b = v.pop().expect("two nodes");
        let a = v.pop().expect("two nodes");
        (a, b)
    }

    /// A server link and one client link per port in `client_ports`, all on
    /// one switch: clients reach the server, the server's frames go to the
    /// client whose UDP port they are addressed to.
    pub fn star(frame_size: usize, frames: usize, client_ports: &[u16]) -> (MemLink, Vec<MemLink>) {
        let mut ports = vec![0];
        ports.extend_from_slice(client_ports);
        let mut v = MemLink::nodes(frame_size, frames, ports);
        let clients = v.split_off(1);
        (v.pop().expect("server node"), clients)
    }

    /// Faults applied to frames this side transmits.
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
        self.rng = Rng(faults.seed);
    }

    /// Every transmission this side made, shared so a test keeps it after
    /// the link moved to another thread.
    pub fn tx_log(&self) -> Arc<Mutex<Vec<TxRecord>>> {
        self.log.clone()
    }

    /// What the wire did to frames this side transmitted.
    pub fn wire_counts(&self) -> WireCounts {
        self.wire.state.lock().expect("wire lock").counts[self.node]
    }

    /// A handle to read the same counts from another thread.
    pub fn counts_handle(&self) -> WireCountsHandle {
        WireCountsHandle {
            wire: self.wire.clone(),
            node: self.node,
        }
    }

    /// TX frames currently allocated (leak check).
    pub fn frames_allocated(&self) -> usize {
        self.allocated.iter().filter(|a| **a).count()
    }

    fn put_on_wire(&mut self, st: &mut WireState, mut bytes: Vec<u8>) {
        let node = self.node;
        st.counts[node].carried += 1;
        if self.rng.chance(self.faults.drop) {
            st.counts[node].dropped += 1;
            return;
        }
        if self.rng.chance(self.faults.corrupt) && !bytes.is_empty() {
            let at = (self.rng.next() % bytes.len() as u64) as usize;
            bytes[at] ^= 1 << (self.rng.next() % 8);
            st.counts[node].corrupted += 1;
        }
        let dup = self.rng.chance(self.faults.duplicate);
        if self.held.is_none() && self.rng.chance(self.faults.reorder) {
            st.counts[node].reordered += 1;
            self.held = Some(bytes);
            return;
        }
        let capacity = self.rx_capacity;
        let default_peer = self.default_peer;
        let deliver = |st: &mut WireState, b: Vec<u8>| {
            let to = st.route(node, default_peer, &b);
            if st.rx[to].len() >= capacity {
                st.counts[node].overflowed += 1;
            } else {
                st.rx[to].push_back(b);
            }
        };
        if dup {
            st.counts[node].duplicated += 1;
            deliver(st, bytes.clone());
        }
        deliver(st, bytes);
        if let Some(h) = self.held.take() {
            deliver(st, h);
        }
    }
}

#[derive(Clone)]
pub struct WireCountsHandle {
    wire: Arc<Wire>,
    node: usize,
}

impl WireCountsHandle {
    pub fn get(&self) -> WireCounts {
        self.wire.state.lock().expect("wire lock").counts[self.node]
    }
}

impl FrameLink for MemLink {
    fn frame_size(&self) -> usize {
        self.frame_size
    }

    fn alloc(&mut self) -> Option<FrameId> {
        let i = self.free.pop()?;
        self.allocated[i as usize] = true;
        Some(FrameId(i))
    }

    fn frame_mut(&mut self, id: FrameId) -> &mut [u8] {
        let i = id.0 as usize;
        assert!(self.allocated[i], "frame_mut on unallocated {id:?}");
        assert!(!self.in_flight[i], "frame_mut on in-flight {id:?}");
        &mut self.pool[i * self.frame_size..(i + 1) * self.frame_size]
    }

    fn transmit(&mut self, id: FrameId, len: usize) -> bool {
        let i = id.0 as usize;
        assert!(self.allocated[i], "transmit of unallocated {id:?}");
        assert!(!self.in_flight[i], "transmit of in-flight {id:?}");
        assert!(len <= self.frame_size);
        if self.queued.len() + self.completing.len() >= self.tx_ring {
            return false;
        }
        self.in_flight[i] = true;
        self.queued.push((id, len));
        let bytes = &self.pool[i * self.frame_size..i * self.frame_size + len];
        let rec = match frame::parse(bytes, None) {
            Ok(f) => TxRecord {
                id,
                kind: Some(f.header.kind as u8),
                session: f.header.session,
                seq: f.header.seq,
            },
            Err(_) => TxRecord {
                id,
                kind: None,
                session: 0,
                seq: 0,
            },
        };
        self.log.lock().expect("log lock").push(rec);
        true
    }

    fn in_flight(&self, id: FrameId) -> bool {
        self.in_flight[id.0 as usize]
    }

    fn free(&mut self, id: FrameId) {
        let i = id.0 as usize;
        assert!(self.allocated[i], "double free of {id:?}");
        assert!(!self.in_flight[i], "free of in-flight {id:?}");
        self.allocated[i] = false;
        self.free.push(id.0);
    }

    fn flush(&mut self) -> io::Result<()> {
        for id in self.completing.drain(..) {
            self.in_flight[id.0 as usize] = false;
        }
        if self.queued.is_empty() {
            return Ok(());
        }
        let wire = self.wire.clone();
        let mut st = wire.state.lock().expect("wire lock");
        let queued = std::mem::take(&mut self.queued);
        for &(id, len) in &queued {
            let i = id.0 as usize;
            let bytes = self.pool[i * self.frame_size..i * self.frame_size + len].to_vec();
            self.put_on_wire(&mut st, bytes);
            self.completing.push(id);
        }
        self.queued = queued;
        self.queued.clear();
        drop(st);
        wire.ready.notify_all();
        Ok(())
    }

    fn receive(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        let mut n = 0;
        while n < max {
            let Some(b) = self.wire.state.lock().expect("wire lock").rx[self.node].pop_front()
            else {
                break;
            };
            f(&b);
            n += 1;
        }
        Ok(n)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if !self.completing.is_empty() || !self.queued.is_empty() {
            return Ok(());
        }
        let st = self.wire.state.lock().expect("wire lock");
        if !st.rx[self.node].is_empty() {
            return Ok(());
        }
        let _ = self
            .wire
            .ready
            .wait_timeout(st, timeout)
            .expect("wire lock");
        Ok(())
    }
}
