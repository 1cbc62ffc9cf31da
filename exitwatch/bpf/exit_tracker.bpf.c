// SPDX-License-Identifier: GPL-2.0
/*
 * exitwatch: on sched_process_exit, record how a tracked process (thread group) ended,
 * exactly as waitpid() would report it, into a map that outlives whoever asked.
 *
 * CO-RE: the few kernel fields used are declared here with preserve_access_index, so the
 * object relocates against any kernel with BTF; no vmlinux.h is needed.
 * The layout of `struct track` and `struct exit_record` is mirrored in src/record.rs.
 */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;

#define BPF_ANY 0
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_LRU_HASH 9

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* include/linux/sched/signal.h; a macro, so absent from BTF; unchanged since 2.6 */
#define SIGNAL_GROUP_EXIT 0x00000004

typedef struct { int counter; } atomic_t;

struct signal_struct {
	atomic_t live;
	int group_exit_code;
	unsigned int flags;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	__u64 start_boottime;
	struct task_struct *group_leader;
	struct signal_struct *signal;
} __attribute__((preserve_access_index));

/* Linux 6.16 gave sched_process_exit its own event class with a group_dead field. */
struct trace_event_raw_sched_process_exit {
	bool group_dead;
} __attribute__((preserve_access_index));

/* Value of tracing_tasks: who asked, and which process (a PID alone can be reused). */
struct track {
	__u64 cookie;
	__u64 start_boottime; /* 0: accept any process with this tgid */
};

/* Value of exited_events. */
struct exit_record {
	__u32 wait_status;    /* what waitpid() stores in *wstatus */
	__u32 last_tid;       /* the thread whose exit ended the group */
	__u64 exit_boot_ns;   /* bpf_ktime_get_boot_ns() at the exit */
	__u64 start_boottime; /* the leader's start, CLOCK_BOOTTIME ns */
	__u64 cookie;         /* from tracing_tasks */
};

enum counter { RECORDED = 0, START_MISMATCH = 1, LOST_CLAIM = 2, COUNTERS = 3 };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); /* tgid, in the initial PID namespace */
	__type(value, struct track);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tracing_tasks SEC(".maps");

/* LRU: a reader that never drains it cannot make it refuse new exits. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct exit_record);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} exited_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} exitwatch_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&exitwatch_counters, &which);
	if (c)
		__sync_fetch_and_add(c, 1);
}

static __always_inline int on_exit(struct task_struct *task, bool group_dead)
{
	if (!group_dead)
		return 0; /* another thread remains: the process lives on */

	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct track *t = bpf_map_lookup_elem(&tracing_tasks, &tgid);
	if (!t)
		return 0;

	struct exit_record rec = {};
	rec.cookie = t->cookie;
	rec.start_boottime = BPF_CORE_READ(task, group_leader, start_boottime);
	if (t->start_boottime && t->start_boottime != rec.start_boottime) {
		count(START_MISMATCH); /* the tgid now names another process: not ours */
		return 0;
	}
	/* Deleting is the claim: of racing exits (the live==0 path can see two) one records. */
	if (bpf_map_delete_elem(&tracing_tasks, &tgid)) {
		count(LOST_CLAIM);
		return 0;
	}

	/* As kernel/exit.c's wait_task_zombie() computes the status a parent sees. */
	struct signal_struct *sig = BPF_CORE_READ(task, signal);
	if (BPF_CORE_READ(sig, flags) & SIGNAL_GROUP_EXIT)
		rec.wait_status = BPF_CORE_READ(sig, group_exit_code);
	else
		rec.wait_status = BPF_CORE_READ(task, group_leader, exit_code);
	rec.last_tid = BPF_CORE_READ(task, pid);
	rec.exit_boot_ns = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&exited_events, &tgid, &rec, BPF_ANY);
	count(RECORDED);
	return 0;
}

/* Before 6.16: signal->live is decremented before the tracepoint fires, so 0 = last thread. */
static __always_inline bool last_thread(struct task_struct *task)
{
	return BPF_CORE_READ(task, signal, live.counter) == 0;
}

#define HAS_GROUP_DEAD bpf_core_field_exists(struct trace_event_raw_sched_process_exit, group_dead)

SEC("tp_btf/sched_process_exit")
int exitwatch_btf(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[0];
	return on_exit(task, HAS_GROUP_DEAD ? (bool)ctx[1] : last_thread(task));
}

SEC("raw_tp/sched_process_exit")
int exitwatch_raw(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[0];
	return on_exit(task, HAS_GROUP_DEAD ? (bool)ctx[1] : last_thread(task));
}

SEC("tracepoint/sched/sched_process_exit")
int exitwatch_tp(struct trace_event_raw_sched_process_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	return on_exit(task, HAS_GROUP_DEAD ? BPF_CORE_READ(ctx, group_dead) : last_thread(task));
}

char LICENSE[] SEC("license") = "GPL";
