"""The thread runtime, written in LLVM IR: `fz_parallel_for(n, task, slots)`.

A persistent pool over pthreads: the first parallel block starts t-1 workers, which then
sleep on a condition variable between blocks; each block publishes one job (task, slots,
n, parts) under the pool's mutex, bumps a generation counter and wakes them. [0, n) is cut
into one contiguous chunk per participant (the split of fz_runtime.h); the caller runs
chunk 0, then waits until the workers' `pending` count reaches zero. A block costs two
condition-variable round trips instead of t-1 thread creations and joins. No Python and no
C compiler are involved, so the JIT and the cross objects share it.

The pool lives in the module's globals (one pool per compiled model).
`fz_pool_shutdown()` stops and joins the workers (the JIT calls it before freeing the
code the workers run); a process that exits with the pool running needs nothing.
pthread_mutex_t / pthread_cond_t are opaque 64-byte, 16-aligned blobs, zero-initialized:
zero is the static initializer on glibc and bionic, and both types are at most 48 bytes
there. If a worker cannot be created, the blocks run with the threads that exist.

The thread count is the global `fz_threads` (set through `fz_set_threads`).
"""
from __future__ import annotations

from llvmlite import ir

from fusion.codegen.llvm.printer import I32, I64, SLOTS, TASK_TYPE, VOID

MAX_THREADS = 64
I8P = ir.IntType(8).as_pointer()
_BLOB = ir.ArrayType(ir.IntType(8), 64)


def _global(m: ir.Module, ty, name: str, align: int | None = None) -> ir.GlobalVariable:
    g = ir.GlobalVariable(m, ty, name)
    g.initializer = ir.Constant(ty, None)
    g.linkage = "internal"
    if align:
        g.align = align
    return g


def add_runtime(m: ir.Module) -> ir.Function:
    """Define fz_threads, fz_set_threads, fz_parallel_for and fz_pool_shutdown in m; return fz_parallel_for."""
    threads = ir.GlobalVariable(m, I32, "fz_threads")
    threads.initializer = ir.Constant(I32, 1)
    threads.linkage = "internal"

    setf = ir.Function(m, ir.FunctionType(I32, [I32]), "fz_set_threads")
    b = ir.IRBuilder(setf.append_basic_block("entry"))
    n = setf.args[0]
    n = b.select(b.icmp_signed("<", n, ir.Constant(I32, 1)), ir.Constant(I32, 1), n)
    n = b.select(b.icmp_signed(">", n, ir.Constant(I32, MAX_THREADS)), ir.Constant(I32, MAX_THREADS), n)
    b.store(n, threads)
    b.ret(n)

    task_ptr = TASK_TYPE.as_pointer()
    mu, wake, done = (_global(m, _BLOB, f"fz_pool_{x}", 16) for x in ("mu", "wake", "done"))
    gen, pending = _global(m, I64, "fz_pool_gen"), _global(m, I64, "fz_pool_pending")
    started, stop = _global(m, I32, "fz_pool_started"), _global(m, I32, "fz_pool_stop")
    job_task, job_slots = _global(m, task_ptr, "fz_job_task"), _global(m, SLOTS, "fz_job_slots")
    job_n, job_parts = _global(m, I64, "fz_job_n"), _global(m, I64, "fz_job_parts")
    tids = _global(m, ir.ArrayType(I64, MAX_THREADS), "fz_pool_tids")
    start_gen = _global(m, ir.ArrayType(I64, MAX_THREADS), "fz_pool_start_gen")

    pthread_t = I64   # unsigned long on glibc and bionic (64-bit)
    start_t = ir.FunctionType(I8P, [I8P])
    create = ir.Function(m, ir.FunctionType(I32, [pthread_t.as_pointer(), I8P, start_t.as_pointer(), I8P]),
                         "pthread_create")
    join = ir.Function(m, ir.FunctionType(I32, [pthread_t, I8P.as_pointer()]), "pthread_join")
    lock = ir.Function(m, ir.FunctionType(I32, [I8P]), "pthread_mutex_lock")
    unlock = ir.Function(m, ir.FunctionType(I32, [I8P]), "pthread_mutex_unlock")
    wait = ir.Function(m, ir.FunctionType(I32, [I8P, I8P]), "pthread_cond_wait")
    signal = ir.Function(m, ir.FunctionType(I32, [I8P]), "pthread_cond_signal")
    broadcast = ir.Function(m, ir.FunctionType(I32, [I8P]), "pthread_cond_broadcast")

    def p8(b, g):
        return b.bitcast(g, I8P)

    def chunk(b, n, k, t):   # [n*k/t, n*(k+1)/t)
        return (b.sdiv(b.mul(n, k), t), b.sdiv(b.mul(n, b.add(k, ir.Constant(I64, 1))), t))

    def while_(f, b, cond_fn, body_fn, name):
        head, body, after = (f.append_basic_block(f"{name}.{x}") for x in ("head", "body", "done"))
        b.branch(head)
        b.position_at_end(head)
        b.cbranch(cond_fn(), body, after)
        b.position_at_end(body)
        body_fn()
        b.branch(head)
        b.position_at_end(after)

    # ---- the worker: sleep until the generation changes, run its chunk, report
    worker = ir.Function(m, start_t, "fz_pool_worker")
    worker.linkage = "internal"
    b = ir.IRBuilder(worker.append_basic_block("entry"))
    me = b.ptrtoint(worker.args[0], I64)
    seen = b.alloca(I64)
    b.store(b.load(b.gep(start_gen, [ir.Constant(I32, 0), me])), seen)
    loop = worker.append_basic_block("loop")
    b.branch(loop)
    b.position_at_end(loop)
    b.call(lock, [p8(b, mu)])
    while_(worker, b, lambda: b.and_(b.icmp_signed("==", b.load(stop), ir.Constant(I32, 0)),
                                     b.icmp_unsigned("==", b.load(gen), b.load(seen))),
           lambda: b.call(wait, [p8(b, wake), p8(b, mu)]), "sleep")
    quit_ = b.load(stop)
    b.store(b.load(gen), seen)
    task, slots, n, parts = (b.load(x) for x in (job_task, job_slots, job_n, job_parts))
    b.call(unlock, [p8(b, mu)])
    exit_, work = worker.append_basic_block("exit"), worker.append_basic_block("work")
    b.cbranch(b.icmp_signed("!=", quit_, ir.Constant(I32, 0)), exit_, work)
    b.position_at_end(exit_)
    b.ret(ir.Constant(I8P, None))
    b.position_at_end(work)
    with b.if_then(b.icmp_signed("<", me, parts)):
        lo, hi = chunk(b, n, me, parts)
        b.call(task, [slots, lo, hi])
        b.call(lock, [p8(b, mu)])
        left = b.sub(b.load(pending), ir.Constant(I64, 1))
        b.store(left, pending)
        with b.if_then(b.icmp_signed("==", left, ir.Constant(I64, 0))):
            b.call(signal, [p8(b, done)])
        b.call(unlock, [p8(b, mu)])
    b.branch(loop)

    # ---- fz_parallel_for
    pf = ir.Function(m, ir.FunctionType(VOID, [I64, task_ptr, SLOTS]), "fz_parallel_for")
    n, task, slots = pf.args
    entry, serial, par = (pf.append_basic_block(x) for x in ("entry", "serial", "par"))
    b = ir.IRBuilder(entry)
    t = b.sext(b.load(threads), I64)
    t = b.select(b.icmp_signed("<", n, t), n, t)
    b.cbranch(b.icmp_signed("<=", t, ir.Constant(I64, 1)), serial, par)
    b.position_at_end(serial)
    b.call(task, [slots, ir.Constant(I64, 0), n])
    b.ret_void()

    b.position_at_end(par)
    b.call(lock, [p8(b, mu)])
    # start workers 1 .. t-1 that do not exist yet; stop at the first that cannot be created
    k = b.alloca(I64)
    b.store(b.add(b.sext(b.load(started), I64), ir.Constant(I64, 1)), k)
    grow_ok = b.alloca(ir.IntType(1))
    b.store(ir.Constant(ir.IntType(1), 1), grow_ok)

    def grow():
        kk = b.load(k)
        b.store(b.load(gen), b.gep(start_gen, [ir.Constant(I32, 0), kk]))
        rc = b.call(create, [b.gep(tids, [ir.Constant(I32, 0), b.sub(kk, ir.Constant(I64, 1))]),
                             ir.Constant(I8P, None), worker, b.inttoptr(kk, I8P)])
        ok = b.icmp_signed("==", rc, ir.Constant(I32, 0))
        b.store(ok, grow_ok)
        with b.if_then(ok):
            b.store(b.trunc(kk, I32), started)
            b.store(b.add(kk, ir.Constant(I64, 1)), k)
    while_(pf, b, lambda: b.and_(b.icmp_signed("<", b.load(k), t), b.load(grow_ok)), grow, "grow")
    have = b.add(b.sext(b.load(started), I64), ir.Constant(I64, 1))
    parts = b.select(b.icmp_signed("<", have, t), have, t)
    for g, v in ((job_task, task), (job_slots, slots), (job_n, n), (job_parts, parts)):
        b.store(v, g)
    b.store(b.sub(parts, ir.Constant(I64, 1)), pending)
    b.store(b.add(b.load(gen), ir.Constant(I64, 1)), gen)
    b.call(broadcast, [p8(b, wake)])
    b.call(unlock, [p8(b, mu)])
    lo, hi = chunk(b, n, ir.Constant(I64, 0), parts)
    b.call(task, [slots, lo, hi])
    b.call(lock, [p8(b, mu)])
    while_(pf, b, lambda: b.icmp_signed(">", b.load(pending), ir.Constant(I64, 0)),
           lambda: b.call(wait, [p8(b, done), p8(b, mu)]), "wait")
    b.call(unlock, [p8(b, mu)])
    b.ret_void()

    # ---- fz_pool_shutdown: stop and join the workers (the pool restarts on the next parallel block)
    sd = ir.Function(m, ir.FunctionType(VOID, []), "fz_pool_shutdown")
    b = ir.IRBuilder(sd.append_basic_block("entry"))
    b.call(lock, [p8(b, mu)])
    count = b.sext(b.load(started), I64)
    b.store(ir.Constant(I32, 1), stop)
    b.call(broadcast, [p8(b, wake)])
    b.call(unlock, [p8(b, mu)])
    j = b.alloca(I64)
    b.store(ir.Constant(I64, 0), j)

    def reap():
        jj = b.load(j)
        b.call(join, [b.load(b.gep(tids, [ir.Constant(I32, 0), jj])), ir.Constant(I8P.as_pointer(), None)])
        b.store(b.add(jj, ir.Constant(I64, 1)), j)
    while_(sd, b, lambda: b.icmp_signed("<", b.load(j), count), reap, "join")
    b.call(lock, [p8(b, mu)])
    b.store(ir.Constant(I32, 0), started)
    b.store(ir.Constant(I32, 0), stop)
    b.call(unlock, [p8(b, mu)])
    b.ret_void()
    return pf
