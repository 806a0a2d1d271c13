//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// guard.c: edgegate's packet guard. It runs at XDP (or TCX ingress when XDP
// cannot attach) in front of edgegate's listeners and drops, before a socket
// buffer is spent on them, packets to a guarded TCP port that cannot be the
// start of a TLS connection: non-TCP traffic, impossible TCP flags, sources
// on the blocklist or outside the allow list, SYNs from a source over its
// connection rate (limits.rate), and streams whose first bytes are not a
// TLS ClientHello record header.
//
// Layout follows xdp-tools' parsing_helpers.h and Katran: the packet
// parsers live in parse.h (shared with reference.c, the program the guard
// is benchmarked against); every loop has a fixed, named bound; every
// packet moves exactly one counter in a per-CPU array indexed by enum
// verdict.
//
// The same core (guard()) is compiled into two entry points, guard_xdp and
// guard_tc, which only translate the verdict into XDP_* or TCX_* codes.
//
// It is a prefilter, not the authority: edgegate parses every ClientHello
// again in userspace. What it cannot see (TCP checksums are not verified, so
// a corrupt segment that the kernel later discards still advances the
// check; bytes after a fragment boundary or past the 9th) is left to that
// second look.

// No kernel headers (see uapi.h): the BPF interface comes from uapi.h, the
// packet headers are laid out in parse.h, and libbpf's headers are
// architecture-neutral.
#include "uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "parse.h"

char __license[] SEC("license") = "Dual MIT/GPL";

// Map sizes. FLOW_SLOTS_MAX is only a default: the loader sizes the flow
// table from Config.FlowTableSize (DefaultFlowTableSize in guard.go).
#define PORTS_MAX 65536       // every TCP/UDP port: the ports map is indexed by port
#define BLOCKLIST_MAX 65536   // blocked sources (LRU)
#define BLOCK_HINT_BITS 16    // block_hints has 2^16 entries
#define ALLOW_MAX 16384       // allow-list prefixes
#define FLOW_SLOTS_MAX 262144 // slots of the flow table
#define SOURCE_RATE_MAX 65536 // sources whose SYN rate is tracked (LRU)
#define NEVER_LIMIT_MAX 16384 // prefixes exempt from the SYN rate limit

// The stream bytes checked per flow: the TLS record header (RFC 8446 5.1:
// content type, version, length) and the first handshake message's header
// (RFC 8446 4: message type, length).
#define TLS_RECORD_HDR_LEN 5
#define TLS_HANDSHAKE_HDR_LEN 4
#define TLS_PREFIX_LEN (TLS_RECORD_HDR_LEN + TLS_HANDSHAKE_HDR_LEN)

// Stream positions of the fields check_byte judges, and their values.
#define TLS_POS_CONTENT_TYPE 0
#define TLS_POS_VERSION_MAJOR 1
#define TLS_POS_VERSION_MINOR 2
#define TLS_POS_LENGTH_HI 3
#define TLS_POS_LENGTH_LO 4
#define TLS_POS_HANDSHAKE_TYPE 5

#define TLS_CONTENT_HANDSHAKE 0x16      // record content type: handshake
#define TLS_VERSION_MAJOR 0x03          // SSL 3.0 to TLS 1.3 are all {03,xx}
#define TLS_VERSION_MINOR_MAX 0x04      // {03,04}: TLS 1.3's number, the newest
#define TLS_RECORD_MAX_LEN (1 << 14)    // record length limit (RFC 8446 5.1)
#define TLS_HANDSHAKE_CLIENT_HELLO 0x01 // handshake message type

// enum verdict indexes the counters map. The Go side keeps the names in the
// same order (counters.go); a test checks they agree. Append only, so a
// verdict keeps its index across versions. Whether a verdict drops is
// listed in drops(), not implied by its place in the enum.
enum verdict {
	VERDICT_PASS_NOT_GUARDED = 0, // not IP, or not to a guarded port
	VERDICT_PASS_SYN,             // SYN without data: flow's slot (re)started
	VERDICT_PASS_TLS,             // new stream bytes checked: ClientHello so far
	VERDICT_PASS_NO_PAYLOAD,      // tracked flow, segment carries no data
	VERDICT_PASS_OTHER_SEQ,       // tracked flow, data not at the first unchecked byte
	VERDICT_PASS_UNTRACKED,       // slot holds another or no flow (checked, started before attach, overwritten)
	VERDICT_PASS_FRAGMENT,        // non-first fragment, fragments: pass
	VERDICT_DROP_NOT_TLS,         // stream does not start like a ClientHello: reset (or dropped)
	VERDICT_DROP_NON_TCP,         // UDP, SCTP, ... to a guarded port
	VERDICT_DROP_BAD_FLAGS,       // impossible TCP flag combination
	VERDICT_DROP_BLOCKED,         // source on the blocklist
	VERDICT_DROP_NOT_ALLOWED,     // allow-only port, source not in the allow list
	VERDICT_DROP_FRAGMENT,        // non-first fragment, fragments: drop
	VERDICT_DROP_MALFORMED,       // truncated or inconsistent headers
	VERDICT_PASS_PROXY_PORT,      // port expects a PROXY header first: bytes not checked
	VERDICT_DROP_REFUSED,         // later segment of a stream refused as not TLS
	VERDICT_DROP_SOURCE_RATE,     // SYN from a source over its connection rate
	VERDICT_MAX,
};

// Flags in struct port_policy. A port is guarded when PORT_GUARDED is set.
// PORT_PROXY_HEADER marks a listener that accepts an inbound PROXY protocol
// header before the ClientHello: its streams do not start with a TLS
// record, so their first bytes are not checked (every other rule still
// applies).
#define PORT_ALLOW_ONLY 0x1
#define PORT_PROXY_HEADER 0x2
#define PORT_GUARDED 0x4

// Flags in struct guard_config. CONFIG_SOURCE_RATE turns on the SYN rate
// limit per source, with the parameters in the config's rate fields.
#define CONFIG_DROP_FRAGMENTS 0x1
#define CONFIG_SOURCE_RATE 0x2

struct port_policy {
	__u32 flags;
};

// The rate limit is a token bucket kept as GCRA does (one word per
// source): rate_interval_ns is the time one SYN costs (1s / rate) and
// rate_burst_ns what a source may have spent ahead of the clock
// (burst * rate_interval_ns).
struct guard_config {
	__u32 flags;
	__u32 reserved;
	__u64 rate_interval_ns;
	__u64 rate_burst_ns;
};

// Addresses are ADDR_LEN bytes everywhere; IPv4 is stored v4-mapped
// (::ffff:a.b.c.d), so one map serves both families.
struct addr_key {
	__u8 addr[ADDR_LEN];
};

struct lpm_key {
	__u32 prefixlen;
	__u8 addr[ADDR_LEN];
};

// The flow table is an array of slots, each one 64-bit word, indexed by a
// keyed hash of the flow's addresses and ports. A SYN writes its flow's
// slot with a plain store, whatever the slot held: no allocation, no lock,
// no LRU list, so a SYN costs little more than a packet the guard does not
// judge. A slot that another flow's SYN overwrote makes its flow untracked:
// edgegate then judges it in userspace alone, as it judges every stream.
//
// Layout of a slot (0 is an empty slot):
//   bits  0-31  next_seq: sequence number of the stream's first unchecked byte
//   bits 32-35  checked: how many of the first TLS_PREFIX_LEN bytes passed
//   bit  36     the record length's high byte (stream byte 3) was its
//               maximum, so byte 4 must be 0
//   bit  37     refused: the stream did not start like a ClientHello
//   bit  38     in use
//   bits 39-63  tag: 25 more bits of the flow's hash, so that a flow does
//               not take another's slot for its own
#define SLOT_CHECKED_SHIFT 32
#define SLOT_CHECKED_MASK 0xfULL
#define SLOT_LEN_HI_MAX (1ULL << 36)
#define SLOT_REFUSED (1ULL << 37)
#define SLOT_USED (1ULL << 38)
#define SLOT_TAG_SHIFT 39
#define SLOT_TAG_BITS 25
#define SLOT_ID_MASK (~0ULL << (SLOT_TAG_SHIFT - 1)) // tag and in-use bit

// The flow hash key: one 32-bit word per word of struct flow_key.
#define FLOW_KEY_WORDS (sizeof(struct flow_key) / sizeof(__u32))

struct flow_hash_key {
	__u32 k[FLOW_KEY_WORDS];
};

_Static_assert(sizeof(struct flow_key) % sizeof(__u32) == 0, "flow_key is whole words");

// flow_state is a slot unpacked.
struct flow_state {
	__u32 next_seq;
	__u32 checked;
	__u32 len_hi_max;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, enum verdict);
	__type(value, __u64);
	__uint(max_entries, VERDICT_MAX);
} counters SEC(".maps");

// Policy by destination port (host byte order); a port is guarded when its
// policy has PORT_GUARDED. An array, not a hash: the lookup every packet
// makes is an index, which the verifier inlines.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct port_policy);
	__uint(max_entries, PORTS_MAX);
} ports SEC(".maps");

// The settings edgegate can change while the guard runs, written by the
// loader and by Guard.Update. A global variable rather than a map of one
// entry: reading it is one load, where a map lookup is a helper call in
// clang's eyes, around which it saves and restores every value it holds.
struct guard_config config;

// Source address -> block expiry in CLOCK_MONOTONIC nanoseconds
// (bpf_ktime_get_ns). Pinned: a restart keeps the blocks.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct addr_key);
	__type(value, __u64);
	__uint(max_entries, BLOCKLIST_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} blocklist SEC(".maps");

// A hint in front of the blocklist, so that a source that is not blocked
// (nearly every packet) costs an array read, not a hash lookup. Entry
// block_hint_index(addr) holds 0, or an expiry at least as late as that of
// every block of an address that maps to it: edgegate raises it before it
// writes a block, and the program puts it back to 0 once it has passed.
// Both sides change it only with compare-and-swap (edgegate through an
// mmap), so a raise is never lost to a reset. Pinned with the blocklist.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1 << BLOCK_HINT_BITS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} block_hints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key);
	__type(value, __u8);
	__uint(max_entries, ALLOW_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} allow SEC(".maps");

// Source (IPv4 address, or IPv6 /64, v4-mapped like addr_key) -> the
// theoretical arrival time of its next SYN in CLOCK_MONOTONIC nanoseconds
// (GCRA; see source_over_rate). LRU with a fixed size, so a
// flood from random sources costs at most SOURCE_RATE_MAX entries: it
// pushes out the oldest sources (which then start afresh), never grows
// the table. Not pinned: a restart forgets the rates, which is harmless.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct addr_key);
	__type(value, __u64);
	__uint(max_entries, SOURCE_RATE_MAX);
} source_rate SEC(".maps");

// Sources exempt from the SYN rate limit (limits.rate.never_limit).
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key);
	__type(value, __u8);
	__uint(max_entries, NEVER_LIMIT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} never_limit SEC(".maps");

// The flow table: streams whose first bytes are being checked, and those
// refused (see the slot layout above). The loader sets max_entries, and
// flow_slot_count to the same number, from Config.FlowTableSize. Pinned,
// with the hash key in flow_hash_key: a restart or an upgrade keeps them.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, FLOW_SLOTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_slots SEC(".maps");

// The key of the flow hash, random, written by the first edgegate to pin
// it, so that a remote sender cannot aim its flows at others' slots. The
// program reads the key from flow_key, a constant the loader sets to the
// pinned key before it loads the program (see flow_slot below); the map
// is where the key is kept.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flow_hash_key);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_hash_key SEC(".maps");

// The number of slots in flow_slots, set by the loader.
volatile const __u32 flow_slot_count = FLOW_SLOTS_MAX;

// The flow hash key held in flow_hash_key, set by the loader. Read
// through volatile, or clang folds the reads to the zeros it starts as.
volatile const struct flow_hash_key flow_key;

static __always_inline enum verdict count(enum verdict v)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &v);
	if (c)
		*c += 1;
	return v;
}

// Fibonacci hashing's multiplier (2^32 / golden ratio).
#define BLOCK_HINT_MUL 0x9e3779b1U

// block_hint_index picks an address's entry in block_hints; edgegate
// computes the same (blockHintIndex).
static __always_inline __u32 block_hint_index(const struct packet *p)
{
	const __u32 *w = (const __u32 *)p->key.saddr;
	return ((w[0] ^ w[1] ^ w[2] ^ w[3]) * BLOCK_HINT_MUL) >> (32 - BLOCK_HINT_BITS);
}

// blocked reports whether the source is on the blocklist with an expiry in
// the future, on the coarse monotonic clock (a block may last a tick
// longer). Expired entries are left for edgegate (or LRU) to remove, so
// the data path never races a fresh block written from userspace; an
// expired hint is put back to 0 here.
static __always_inline int blocked(struct packet *p)
{
	__u32 i = block_hint_index(p);
	__u64 *hint = bpf_map_lookup_elem(&block_hints, &i);
	if (!hint)
		return 0;
	__u64 h = *(volatile __u64 *)hint;
	if (!h)
		return 0;
	__u64 now = bpf_ktime_get_coarse_ns();
	__u64 *until = bpf_map_lookup_elem(&blocklist, p->key.saddr);
	if (until && *until > now)
		return 1;
	if (h <= now)
		__sync_val_compare_and_swap(hint, h, 0);
	return 0;
}

static __always_inline int allowed(struct packet *p)
{
	struct lpm_key k = {.prefixlen = ADDR_BITS};
	__builtin_memcpy(k.addr, p->key.saddr, ADDR_LEN);
	return bpf_map_lookup_elem(&allow, &k) != NULL;
}

// IPv6 sources share a rate per /64, the block a single host or site is
// usually given: per address, one host could take a fresh source for every
// SYN.
#define RATE_V6_PREFIX_BYTES 8

// source_over_rate charges a SYN to its source's rate and reports whether
// the source is over it (the SYN is then dropped and not charged), when
// the rate limit is on and the source is not exempt. A bucket is one word:
// the theoretical arrival time tat of the source's next SYN; a SYN at now
// moves it to max(tat, now) + interval, and is over the rate when that is
// more than burst ahead of now. A SYN that races another CPU's for the
// same source may go uncharged (the compare-and-swap fails): the limit
// can let a little more through, never less.
//
// The clock is the coarse one (bpf_ktime_get_coarse_ns, one tick of
// CONFIG_HZ: 1 to 10ms), as for the blocklist: on the machine measured,
// bpf_ktime_get_ns doubled the cost of a SYN under the limit. A bucket
// then refills up to a tick late or early, which changes no rate over
// time and at most one tick's worth of SYNs at once.
static __always_inline int source_over_rate(const struct packet *p)
{
	const struct guard_config *cfg = &config;
	if (!(cfg->flags & CONFIG_SOURCE_RATE))
		return 0;

	struct lpm_key lk = {.prefixlen = ADDR_BITS};
	__builtin_memcpy(lk.addr, p->key.saddr, ADDR_LEN);
	if (bpf_map_lookup_elem(&never_limit, &lk))
		return 0;

	struct addr_key k;
	__builtin_memcpy(k.addr, p->key.saddr, ADDR_LEN);
	if (p->key.family == FAMILY_IPV6)
		__builtin_memset(k.addr + RATE_V6_PREFIX_BYTES, 0, ADDR_LEN - RATE_V6_PREFIX_BYTES);

	__u64 interval = cfg->rate_interval_ns, burst = cfg->rate_burst_ns;
	__u64 now = bpf_ktime_get_coarse_ns();
	__u64 *tat = bpf_map_lookup_elem(&source_rate, &k);
	if (!tat) {
		__u64 next = now + interval;
		bpf_map_update_elem(&source_rate, &k, &next, BPF_NOEXIST);
		return 0;
	}
	__u64 old = *(volatile __u64 *)tat;
	__u64 next = (old > now ? old : now) + interval;
	if (next - now > burst)
		return 1;
	__sync_val_compare_and_swap(tat, old, next);
	return 0;
}

// bad_flags reports TCP flag combinations no correct stack sends:
//   SYN+FIN, SYN+RST: a SYN opens, FIN and RST close;
//   none of SYN, ACK, RST: after the SYN every segment carries ACK, and the
//   only ACK-less segments are a SYN and a RST (RFC 9293 3.10.7), so this
//   covers NULL, FIN, Xmas (FIN+PSH+URG) and PSH-only scans.
// Deliberately allowed: FIN+RST (not forbidden by RFC 9293 and seen from
// some stacks), SYN with PSH/URG/ECE/CWR (TFO, ECN set-up), reserved bits
// (AccECN uses one), SYN+ACK (simultaneous open).
static __always_inline int bad_flags(__u8 flags)
{
	if ((flags & TCP_SYN) && (flags & (TCP_FIN | TCP_RST)))
		return 1;
	if (!(flags & (TCP_SYN | TCP_ACK | TCP_RST)))
		return 1;
	return 0;
}

// check_byte judges the byte at stream position pos of a TLS stream: a
// handshake record, version 3.0-3.4, length at most 2^14 and a
// ClientHello as the first handshake message. 3.0 is allowed because
// RFC 5246 E.1 lets a client put {03,00} in its first record, and
// crypto/tls and edgegate's sni reader accept it. Bytes 6-8 (handshake
// length) are not constrained: post-quantum hellos span several records.
static __always_inline int check_byte(struct flow_state *st, __u32 pos, __u8 b)
{
	switch (pos) {
	case TLS_POS_CONTENT_TYPE:
		return b == TLS_CONTENT_HANDSHAKE;
	case TLS_POS_VERSION_MAJOR:
		return b == TLS_VERSION_MAJOR;
	case TLS_POS_VERSION_MINOR:
		return b <= TLS_VERSION_MINOR_MAX;
	case TLS_POS_LENGTH_HI:
		st->len_hi_max = b == TLS_RECORD_MAX_LEN >> 8;
		return b <= TLS_RECORD_MAX_LEN >> 8;
	case TLS_POS_LENGTH_LO:
		return !st->len_hi_max || b <= (TLS_RECORD_MAX_LEN & 0xff);
	case TLS_POS_HANDSHAKE_TYPE:
		return b == TLS_HANDSHAKE_CLIENT_HELLO;
	}
	return 1;
}

// Data before the bytes to check is shorter than this for them to be read
// in place: the bound, a power of two used as a mask, lets the verifier
// check the offset.
#define DIRECT_READ_LIMIT 4096

// check_payload judges the stream bytes a segment carries at the first
// unchecked position. c is at the TCP header, payload_off is the packet
// offset of the segment's first data byte and skip how many of its bytes
// precede next_seq. On success st is advanced; on failure st is left as it
// was.
static __always_inline int check_payload(void *ctx, int is_xdp, struct cursor *c,
					 struct flow_state *st, __u32 payload_off, __u32 skip,
					 __u32 payload_len)
{
	__u8 buf[TLS_PREFIX_LEN] = {};
	__u32 checked = st->checked;
	if (checked >= TLS_PREFIX_LEN)
		return 1;
	__u32 n = payload_len - skip;
	if (n > TLS_PREFIX_LEN - checked)
		n = TLS_PREFIX_LEN - checked;
	// Callers guarantee 1 <= n <= TLS_PREFIX_LEN, and clang knows it; the verifier does
	// not, so keep clang from folding the check away.
	barrier_var(n);
	if (n < 1 || n > TLS_PREFIX_LEN)
		return 1;

	// The bytes are read in place when TLS_PREFIX_LEN of them lie in the
	// part of the packet the parsers read (at XDP all of it, at TC the
	// first HDR_PULL_LEN bytes); otherwise a helper copies them.
	__u32 off = payload_off - c->off + skip;
	void *at = NULL;
	if (off < DIRECT_READ_LIMIT) {
		barrier_var(off);
		off &= DIRECT_READ_LIMIT - 1;
		at = c->pos + off;
		if (at + TLS_PREFIX_LEN > c->end)
			at = NULL;
	}
	if (at) {
		__builtin_memcpy(buf, at, TLS_PREFIX_LEN);
	} else {
		long err;
		if (is_xdp)
			err = bpf_xdp_load_bytes(ctx, payload_off + skip, buf, n);
		else
			err = bpf_skb_load_bytes(ctx, payload_off + skip, buf, n);
		if (err)
			return 0;
	}

	struct flow_state next = *st;
	if (checked == 0 && n == TLS_PREFIX_LEN) {
		// The usual case, a whole prefix in one segment, without the
		// loop.
		if (buf[TLS_POS_CONTENT_TYPE] != TLS_CONTENT_HANDSHAKE ||
		    buf[TLS_POS_VERSION_MAJOR] != TLS_VERSION_MAJOR ||
		    buf[TLS_POS_VERSION_MINOR] > TLS_VERSION_MINOR_MAX ||
		    ((buf[TLS_POS_LENGTH_HI] << 8) | buf[TLS_POS_LENGTH_LO]) > TLS_RECORD_MAX_LEN ||
		    buf[TLS_POS_HANDSHAKE_TYPE] != TLS_HANDSHAKE_CLIENT_HELLO)
			return 0;
		st->checked = TLS_PREFIX_LEN;
		st->next_seq += TLS_PREFIX_LEN;
		st->len_hi_max = buf[TLS_POS_LENGTH_HI] == TLS_RECORD_MAX_LEN >> 8;
		return 1;
	}
	for (int i = 0; i < TLS_PREFIX_LEN; i++) {
		if (i >= n)
			break;
		if (!check_byte(&next, checked + i, buf[i]))
			return 0;
	}
	next.checked = checked + n;
	next.next_seq = st->next_seq + n;
	*st = next;
	return 1;
}

// Multiplier of the hash's final mix (splitmix64's first).
#define FLOW_HASH_MIX 0xbf58476d1ce4e5b9ULL

// Words of struct flow_key that vary for IPv4: the two addresses (the
// last word of each v4-mapped address), the ports, the family.
#define FLOW_KEY_V4_SADDR 3
#define FLOW_KEY_V4_DADDR 7
#define FLOW_KEY_PORTS 8
#define FLOW_KEY_FAMILY 9

// flow_hash hashes a flow key with the secret key hk: NH (the universal
// hash of UMAC, RFC 4418 5.2) over pairs of words, whose multiplications are
// independent of each other, then one multiply-xorshift round to spread the
// bits. An IPv4 key is hashed over the 4 words that are not the same in
// every IPv4 key. The Go model (model_test.go) computes the same.
static __always_inline __u64 flow_hash(const struct flow_key *fk, const volatile struct flow_hash_key *hk)
{
	const __u32 *w = (const __u32 *)fk;
	__u64 h = 0;
	// The family word is the family, its padding zero: it is taken from
	// the branch rather than read back (a 4-byte read of a 1-byte store
	// and part of another waits for both to reach the cache; see map_v4).
	if (fk->family == FAMILY_IPV4) {
		h = (__u64)(__u32)(w[FLOW_KEY_V4_SADDR] + hk->k[0]) * (__u32)(w[FLOW_KEY_V4_DADDR] + hk->k[1]) +
		    (__u64)(__u32)(w[FLOW_KEY_PORTS] + hk->k[2]) * (__u32)(FAMILY_IPV4 + hk->k[3]);
	} else {
#pragma unroll
		for (int i = 0; i + 1 < FLOW_KEY_FAMILY; i += 2)
			h += (__u64)(__u32)(w[i] + hk->k[i]) * (__u32)(w[i + 1] + hk->k[i + 1]);
		h += (__u64)(__u32)(w[FLOW_KEY_PORTS] + hk->k[FLOW_KEY_PORTS]) *
		     (__u32)(FAMILY_IPV6 + hk->k[FLOW_KEY_FAMILY]);
	}
	h ^= h >> 31;
	h *= FLOW_HASH_MIX;
	h ^= h >> 29;
	return h;
}

// flow_slot returns the flow's slot and sets *id to the bits (tag and
// in-use) that mark the slot as the flow's; NULL if the map is not there.
// The key is the constant flow_key, not the map flow_hash_key: a lookup
// in the map would cost a SYN more than the hash does (see config).
static __always_inline __u64 *flow_slot(const struct flow_key *fk, __u64 *id)
{
	__u64 h = flow_hash(fk, &flow_key);
	// Multiply-shift maps the high half onto [0, flow_slot_count).
	__u32 idx = ((h >> 32) * flow_slot_count) >> 32;
	*id = SLOT_USED | ((h & ((1ULL << SLOT_TAG_BITS) - 1)) << SLOT_TAG_SHIFT);
	return bpf_map_lookup_elem(&flow_slots, &idx);
}

static __always_inline __u64 slot_pack(__u64 id, const struct flow_state *st)
{
	__u64 v = id | st->next_seq | ((__u64)st->checked << SLOT_CHECKED_SHIFT);
	if (st->len_hi_max)
		v |= SLOT_LEN_HI_MAX;
	return v;
}

static __always_inline void slot_unpack(__u64 v, struct flow_state *st)
{
	st->next_seq = (__u32)v;
	st->checked = (v >> SLOT_CHECKED_SHIFT) & SLOT_CHECKED_MASK;
	st->len_hi_max = (v & SLOT_LEN_HI_MAX) != 0;
}

// Slots are read and written whole, as single 64-bit accesses, so that a
// reader on another CPU never sees half of one flow's state and half of
// another's.
#define READ_SLOT(p) (*(volatile __u64 *)(p))
#define WRITE_SLOT(p, v) (*(volatile __u64 *)(p) = (v))

// Ones' complement sums for the RST's checksums (RFC 1071), over 16-bit
// words as they lie in memory: the sum is byte-order independent. The
// words are summed from values already in registers, not read back from
// a header built on the stack: a read that spans several narrower stores
// waits for them to reach the cache.
static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

// csum_words32 adds the two 16-bit words of a 32-bit value as it lies in
// memory.
static __always_inline __u32 csum_words32(__u32 v)
{
	return (v & 0xffff) + (v >> 16);
}

// csum_replace2 is the checksum after a 16-bit field changed from old to
// new (RFC 1624 equation 3).
static __always_inline __u16 csum_replace2(__u16 check, __u16 old, __u16 new)
{
	return ~csum_fold((__u16)~check + (__u16)~old + new);
}

// Headers before the TCP header are shorter than this for a reset: the
// bound, a power of two used as a mask, lets the verifier check the
// rewrites' packet offsets.
#define RESET_L4_OFF_LIMIT 1024

// The RST's data offset and flags (bytes 12 and 13 of its header) as the
// 16-bit word they make in memory: no options, RST alone.
#define RST_DOFF_RES ((sizeof(struct tcphdr) / TCP_DOFF_UNIT) << TCP_DOFF_SHIFT)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define RST_DOFF_FLAGS_WORD (RST_DOFF_RES | TCP_RST << 8)
#else
#define RST_DOFF_FLAGS_WORD (RST_DOFF_RES << 8 | TCP_RST)
#endif

// rst_check returns the checksum of the RST reset_segment writes over the
// pseudo-header (RFC 9293 3.1, RFC 8200 8.1) and itself: the segment's
// ports, sequence number seq_be (network order), no ACK, no options, no
// window.
static __always_inline __u16 rst_check(const struct packet *p, __be32 seq_be)
{
	const __u32 *s = (const __u32 *)p->key.saddr;
	const __u32 *d = (const __u32 *)p->key.daddr;
	__u32 sum = bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(struct tcphdr));
	if (p->key.family == FAMILY_IPV4) {
		sum += csum_words32(s[ADDR_LEN / 4 - 1]) + csum_words32(d[ADDR_LEN / 4 - 1]);
	} else {
#pragma unroll
		for (int i = 0; i < ADDR_LEN / 4; i++)
			sum += csum_words32(s[i]) + csum_words32(d[i]);
	}
	sum += csum_words32(*(const __u32 *)&p->key.sport); // both ports
	sum += csum_words32(seq_be) + RST_DOFF_FLAGS_WORD;
	return ~csum_fold(sum);
}

// write_rst turns the TCP header th into the RST rst_check summed: the
// ports stay, every other field is written.
static __always_inline void write_rst(struct tcphdr *th, __be32 seq_be, __u16 check)
{
	th->seq = seq_be;
	th->ack_seq = 0;
	th->doff_res = RST_DOFF_RES;
	th->flags = TCP_RST;
	th->window = 0;
	th->check = check;
	th->urg_ptr = 0;
}

// reset_offsets checks the offsets of the IP and TCP headers for a reset
// and returns them masked for the verifier, or 0 if there is none to do.
static __always_inline int reset_offsets(const struct packet *p, __u32 *l3_off, __u32 *l4_off)
{
	// The datagram's other fragments would follow a finished RST.
	if (p->more_fragments)
		return 0;
	__u32 l3 = p->l3_off, l4 = *l4_off;
	if (l3 >= RESET_L4_OFF_LIMIT || l4 >= RESET_L4_OFF_LIMIT || l4 < l3)
		return 0;
	// clang knows the masks change nothing and would drop them; the
	// verifier needs them.
	barrier_var(l3);
	barrier_var(l4);
	*l3_off = l3 & (RESET_L4_OFF_LIMIT - 1);
	*l4_off = l4 & (RESET_L4_OFF_LIMIT - 1);
	return 1;
}

// reset_segment_xdp and reset_segment_tc turn the TCP segment at l4_off
// into a RST in place: no data, no options, no ACK, sequence number seq
// (the stream's first unchecked byte, where the local stack expects the
// stream's next byte); the IP length and checksum and the TCP checksum are
// rewritten. The bytes after the TCP header stay in the frame, outside the
// IP length: the IP layer cuts them off as link padding (ip_rcv_core,
// ip6_rcv_core), which spares a helper call. Passed up, the RST ends the
// connection the local stack holds for the stream (an embryonic one, which
// TCP_DEFER_ACCEPT keeps out of accept(), or an established one) without a
// word to the client, and an embryonic connection never reaches accept().
// They return 1 if the packet is that RST now, 0 if it could not be
// rewritten and must be dropped.
//
// They are global functions, which the verifier checks once, on their
// own, rather than once for every way through the parsers that reaches
// them.
__noinline int reset_segment_xdp(struct xdp_md *ctx, const struct packet *p, __u32 l4_off,
				 __u32 seq)
{
	__u32 l3_off;
	if (!ctx || !p || !reset_offsets(p, &l3_off, &l4_off))
		return 0;
	__be32 seq_be = bpf_htonl(seq);
	__be16 ip_len = bpf_htons(l4_off - l3_off + sizeof(struct tcphdr));

	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct tcphdr *th = data + l4_off;
	if ((void *)(th + 1) > end)
		return 0;
	if (p->key.family == FAMILY_IPV4) {
		struct iphdr *ip = data + l3_off;
		if ((void *)(ip + 1) > end)
			return 0;
		ip->check = csum_replace2(ip->check, ip->tot_len, ip_len);
		ip->tot_len = ip_len;
	} else {
		struct ipv6hdr *ip6 = data + l3_off;
		if ((void *)(ip6 + 1) > end)
			return 0;
		ip6->payload_len = bpf_htons(bpf_ntohs(ip_len) - sizeof(*ip6));
	}
	write_rst(th, seq_be, rst_check(p, seq_be));
	return 1;
}

// At TC the headers are rewritten in place as at XDP, and skb->csum is
// kept in step with the bytes, which a NIC's CHECKSUM_COMPLETE needs:
// bpf_csum_update adds the difference the rewrite made to the sum of the
// packet's 16-bit words, if the skb carries such a sum (and does nothing
// otherwise). The rewritten words start at even offsets from the IP
// header, where that sum starts. An skb that GRO made of several segments
// is cut with bpf_skb_change_tail, which also clears its segmentation;
// any other is left for the IP layer to cut (see reset_segment_xdp).
__noinline int reset_segment_tc(struct __sk_buff *skb, const struct packet *p, __u32 l4_off,
				__u32 seq)
{
	__u32 l3_off;
	if (!skb || !p || !reset_offsets(p, &l3_off, &l4_off))
		return 0;
	__be32 seq_be = bpf_htonl(seq);
	__be16 ip_len = bpf_htons(l4_off - l3_off + sizeof(struct tcphdr));

	// The first HDR_PULL_LEN bytes are linear (guard_tc); IPv6
	// extension headers can push the TCP header past them.
	if (skb->data + l4_off + sizeof(struct tcphdr) > skb->data_end &&
	    bpf_skb_pull_data(skb, l4_off + sizeof(struct tcphdr)))
		return 0;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct tcphdr *th = data + l4_off;
	if ((void *)(th + 1) > end)
		return 0;

	// old and new: the sums of the words the rewrite changes, before and
	// after (the ports stay).
	__u32 old = csum_words32(*(__u32 *)&th->seq) + csum_words32(*(__u32 *)&th->ack_seq) +
		    *(__u16 *)&th->doff_res + th->window + th->check + th->urg_ptr;
	__u16 check = rst_check(p, seq_be);
	__u32 new = csum_words32(seq_be) + RST_DOFF_FLAGS_WORD + check;
	if (p->key.family == FAMILY_IPV4) {
		struct iphdr *ip = data + l3_off;
		if ((void *)(ip + 1) > end)
			return 0;
		__u16 ip_check = csum_replace2(ip->check, ip->tot_len, ip_len);
		old += ip->tot_len + ip->check;
		new += ip_len + ip_check;
		ip->check = ip_check;
		ip->tot_len = ip_len;
	} else {
		struct ipv6hdr *ip6 = data + l3_off;
		if ((void *)(ip6 + 1) > end)
			return 0;
		__be16 payload_len = bpf_htons(bpf_ntohs(ip_len) - sizeof(*ip6));
		old += ip6->payload_len;
		new += payload_len;
		ip6->payload_len = payload_len;
	}
	write_rst(th, seq_be, check);
	bpf_csum_update(skb, csum_fold(new) + (__u16)~csum_fold(old));

	if (skb->gso_size)
		return bpf_skb_change_tail(skb, l4_off + sizeof(struct tcphdr), 0) == 0;
	return 1;
}

static __always_inline int reset_segment(void *ctx, int is_xdp, struct packet *p,
					 __u32 l4_off, __u32 seq)
{
	if (is_xdp)
		return reset_segment_xdp(ctx, p, l4_off, seq);
	return reset_segment_tc(ctx, p, l4_off, seq);
}

// judge_tcp decides a TCP segment to a guarded port once source checks
// passed. *reset is set when the segment was rewritten into a RST, which
// then passes instead of being dropped.
static __always_inline enum verdict judge_tcp(void *ctx, int is_xdp, struct cursor *c,
					      struct packet *p, __u32 port_flags, int *reset)
{
	__u32 payload_off, payload_len;
	struct tcphdr *th = parse_tcp(c, p, &payload_off, &payload_len);
	if (!th)
		return VERDICT_DROP_MALFORMED;
	if (bad_flags(th->flags))
		return VERDICT_DROP_BAD_FLAGS;
	// A SYN over its source's rate is dropped before it costs a slot, or
	// a place in the listen queue.
	if ((th->flags & (TCP_SYN | TCP_ACK)) == TCP_SYN && source_over_rate(p))
		return VERDICT_DROP_SOURCE_RATE;
	if (port_flags & PORT_PROXY_HEADER)
		return VERDICT_PASS_PROXY_PORT;

	__u32 seq = bpf_ntohl(th->seq);
	__u32 l4_off = c->off;
	__u64 id;
	__u64 *slot = flow_slot(&p->key, &id);
	if (!slot)
		return VERDICT_PASS_UNTRACKED;

	if ((th->flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		// A SYN (re)starts the check of its stream. With TCP Fast Open the
		// hello rides in the SYN; a SYN whose data is not one is dropped
		// (no connection exists yet to reset) and leaves the slot alone.
		struct flow_state st = {.next_seq = seq + 1}; // the SYN takes one
		enum verdict v = VERDICT_PASS_SYN;
		if (payload_len > 0) {
			if (!check_payload(ctx, is_xdp, c, &st, payload_off, 0, payload_len))
				return VERDICT_DROP_NOT_TLS;
			v = VERDICT_PASS_TLS;
		}
		if (st.checked < TLS_PREFIX_LEN)
			WRITE_SLOT(slot, slot_pack(id, &st));
		else if ((READ_SLOT(slot) & SLOT_ID_MASK) == id)
			WRITE_SLOT(slot, 0);
		return v;
	}

	__u64 cur = READ_SLOT(slot);
	if ((cur & SLOT_ID_MASK) != id)
		return VERDICT_PASS_UNTRACKED;
	struct flow_state st;
	slot_unpack(cur, &st);
	// skip: how far next_seq lies into this segment (serial arithmetic).
	__s32 skip = (__s32)(st.next_seq - seq);
	int at_next = payload_len > 0 && skip >= 0 && (__u32)skip < payload_len;

	if (cur & SLOT_REFUSED) {
		// The local stack no longer knows the connection and would answer
		// these with a RST of its own: drop them, except that the refused
		// bytes, retransmitted, are reset again in case the first RST
		// did not end the connection.
		if (!at_next)
			return VERDICT_DROP_REFUSED;
	} else {
		if (payload_len == 0)
			return VERDICT_PASS_NO_PAYLOAD;
		if (!at_next)
			return VERDICT_PASS_OTHER_SEQ;
		// Plain stores, like a SYN's: should another stream's SYN have
		// taken the slot since it was read, that stream loses it, as it
		// would to any collision, and passes untracked.
		if (check_payload(ctx, is_xdp, c, &st, payload_off, skip, payload_len)) {
			WRITE_SLOT(slot, st.checked >= TLS_PREFIX_LEN ? 0 : slot_pack(id, &st));
			return VERDICT_PASS_TLS;
		}
		WRITE_SLOT(slot, cur | SLOT_REFUSED);
	}
	*reset = reset_segment(ctx, is_xdp, p, l4_off, st.next_seq);
	return VERDICT_DROP_NOT_TLS;
}

// guard is the shared core. frame_len is the packet length from the start
// of the Ethernet header (it can exceed end - data at TC with paged skbs).
// *reset is set when the packet was rewritten into a RST to pass up.
static __always_inline enum verdict guard(void *ctx, int is_xdp, void *data, void *data_end,
					  __u32 frame_len, int *reset)
{
	struct cursor c = {.pos = data, .end = data_end};
	struct packet p = {};

	switch (parse_packet(&c, &p, frame_len)) {
	case PARSED_PORTS:
		break;
	case PARSED_NOT_IP:
	case PARSED_NO_PORTS:
		return VERDICT_PASS_NOT_GUARDED;
	case PARSED_FRAGMENT: {
		// No L4 header, so no port: the setting applies to all of them.
		if (config.flags & CONFIG_DROP_FRAGMENTS)
			return VERDICT_DROP_FRAGMENT;
		return VERDICT_PASS_FRAGMENT;
	}
	case PARSED_MALFORMED:
		return VERDICT_DROP_MALFORMED;
	}

	// The rest of the L4 header is only read once the port is guarded.
	__u32 dport = bpf_ntohs(p.key.dport);
	struct port_policy *pol = bpf_map_lookup_elem(&ports, &dport);
	if (!pol || !(pol->flags & PORT_GUARDED))
		return VERDICT_PASS_NOT_GUARDED;

	if (blocked(&p))
		return VERDICT_DROP_BLOCKED;
	if ((pol->flags & PORT_ALLOW_ONLY) && !allowed(&p))
		return VERDICT_DROP_NOT_ALLOWED;
	if (p.l4proto != IPPROTO_TCP)
		return VERDICT_DROP_NON_TCP;

	return judge_tcp(ctx, is_xdp, &c, &p, pol->flags, reset);
}

// drops says whether a verdict drops its packet, unless the packet was
// rewritten into a RST. Each verdict is listed by name and there is no
// default, so a new verdict fails the build (-Wswitch under -Werror) until
// it is given an action here, and cannot change another's by where it
// lands in the enum.
static __always_inline int drops(enum verdict v)
{
	switch (v) {
	case VERDICT_PASS_NOT_GUARDED:
	case VERDICT_PASS_SYN:
	case VERDICT_PASS_TLS:
	case VERDICT_PASS_NO_PAYLOAD:
	case VERDICT_PASS_OTHER_SEQ:
	case VERDICT_PASS_UNTRACKED:
	case VERDICT_PASS_FRAGMENT:
	case VERDICT_PASS_PROXY_PORT:
		return 0;
	case VERDICT_DROP_NOT_TLS:
	case VERDICT_DROP_NON_TCP:
	case VERDICT_DROP_BAD_FLAGS:
	case VERDICT_DROP_BLOCKED:
	case VERDICT_DROP_NOT_ALLOWED:
	case VERDICT_DROP_FRAGMENT:
	case VERDICT_DROP_MALFORMED:
	case VERDICT_DROP_REFUSED:
	case VERDICT_DROP_SOURCE_RATE:
		return 1;
	case VERDICT_MAX: // a count, not a verdict: guard() never returns it
		break;
	}
	return 0;
}

SEC("xdp")
int guard_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int reset = 0;
	enum verdict v = count(guard(ctx, 1, data, data_end, data_end - data, &reset));
	return drops(v) && !reset ? XDP_DROP : XDP_PASS;
}

// Headers are read with direct packet access; at TC they may sit partly in
// paged data, so make the first HDR_PULL_LEN bytes linear first.
#define HDR_PULL_LEN 256

SEC("tc")
int guard_tc(struct __sk_buff *skb)
{
	__u32 linear = skb->data_end - skb->data;
	if (linear < HDR_PULL_LEN && skb->len > linear)
		bpf_skb_pull_data(skb, skb->len < HDR_PULL_LEN ? skb->len : HDR_PULL_LEN);

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	int reset = 0;
	enum verdict v = count(guard(skb, 0, data, data_end, skb->len, &reset));
	// TCX_NEXT rather than TCX_PASS, so programs after ours still run.
	return drops(v) && !reset ? TCX_DROP : TCX_NEXT;
}
