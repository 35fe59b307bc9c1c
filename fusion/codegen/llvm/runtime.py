"""The thread runtime, written in LLVM IR: `fz_parallel_for(n, task, slots)`.

Fork-join over pthreads: [0, n) is cut into one contiguous chunk per thread
(the same split as fz_runtime.h), threads 1..t-1 are created for their chunk,
the caller runs chunk 0 and joins the rest. No Python and no C compiler are
involved, so the JIT and the cross objects share it. It pays a thread
creation per parallel block (tens of microseconds), which is why only blocks
the lowering marked parallel (enough work) use it; a persistent pool like
fz_runtime.h's would remove that cost.

The thread count is the global `fz_threads` (set through `fz_set_threads`).
"""
from __future__ import annotations

from llvmlite import ir

from fusion.codegen.llvm.printer import I32, I64, SLOTS, TASK_TYPE, VOID

MAX_THREADS = 64
I8P = ir.IntType(8).as_pointer()


def add_runtime(m: ir.Module) -> ir.Function:
    """Define fz_threads, fz_set_threads and fz_parallel_for in m; return fz_parallel_for."""
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
    job = ir.LiteralStructType([task_ptr, SLOTS, I64, I64])
    start_t = ir.FunctionType(I8P, [I8P])
    tramp = ir.Function(m, start_t, "fz_thread_main")
    tramp.linkage = "internal"
    b = ir.IRBuilder(tramp.append_basic_block("entry"))
    jp = b.bitcast(tramp.args[0], job.as_pointer())
    fields = [b.load(b.gep(jp, [ir.Constant(I32, 0), ir.Constant(I32, k)])) for k in range(4)]
    b.call(fields[0], fields[1:])
    b.ret(ir.Constant(I8P, None))

    pthread_t = I64   # unsigned long on glibc and bionic (64-bit)
    create = ir.Function(m, ir.FunctionType(I32, [pthread_t.as_pointer(), I8P, start_t.as_pointer(), I8P]),
                         "pthread_create")
    join = ir.Function(m, ir.FunctionType(I32, [pthread_t, I8P.as_pointer()]), "pthread_join")

    pf = ir.Function(m, ir.FunctionType(VOID, [I64, task_ptr, SLOTS]), "fz_parallel_for")
    n, task, slots = pf.args
    entry, serial, par = (pf.append_basic_block(x) for x in ("entry", "serial", "par"))
    b = ir.IRBuilder(entry)
    jobs = b.alloca(job, ir.Constant(I32, MAX_THREADS))
    tids = b.alloca(pthread_t, ir.Constant(I32, MAX_THREADS))
    t = b.sext(b.load(threads), I64)
    t = b.select(b.icmp_signed("<", n, t), n, t)
    b.cbranch(b.icmp_signed("<=", t, ir.Constant(I64, 1)), serial, par)
    b.position_at_end(serial)
    b.call(task, [slots, ir.Constant(I64, 0), n])
    b.ret_void()

    def chunk(k):   # [n*k/t, n*(k+1)/t)
        return (b.sdiv(b.mul(n, k), t), b.sdiv(b.mul(n, b.add(k, ir.Constant(I64, 1))), t))

    def loop(lo, hi, body, name):
        pre = b.block
        head, bod, done = (pf.append_basic_block(f"{name}.{x}") for x in ("head", "body", "done"))
        b.branch(head)
        b.position_at_end(head)
        k = b.phi(I64)
        k.add_incoming(lo, pre)
        b.cbranch(b.icmp_signed("<", k, hi), bod, done)
        b.position_at_end(bod)
        body(k)
        k.add_incoming(b.add(k, ir.Constant(I64, 1)), b.block)
        b.branch(head)
        b.position_at_end(done)

    b.position_at_end(par)

    def spawn(k):
        lo, hi = chunk(k)
        jp = b.gep(jobs, [k])
        for f, v in enumerate((task, slots, lo, hi)):
            b.store(v, b.gep(jp, [ir.Constant(I32, 0), ir.Constant(I32, f)]))
        tp = b.gep(tids, [k])
        rc = b.call(create, [tp, ir.Constant(I8P, None), tramp, b.bitcast(jp, I8P)])
        failed = b.icmp_signed("!=", rc, ir.Constant(I32, 0))
        with b.if_then(failed):   # no thread: run the chunk here, nothing to join
            b.call(task, [slots, lo, hi])
            b.store(ir.Constant(I64, 0), tp)

    def reap(k):
        tid = b.load(b.gep(tids, [k]))
        with b.if_then(b.icmp_unsigned("!=", tid, ir.Constant(I64, 0))):
            b.call(join, [tid, ir.Constant(I8P.as_pointer(), None)])

    loop(ir.Constant(I64, 1), t, spawn, "spawn")
    lo, hi = chunk(ir.Constant(I64, 0))
    b.call(task, [slots, lo, hi])
    loop(ir.Constant(I64, 1), t, reap, "join")
    b.ret_void()
    return pf
