import atexit, time, os
EV = []
def ev(name, n=0):
    EV.append((name, time.perf_counter_ns(), n))
def _dump():
    p = os.environ.get("XTRACE")
    if p:
        with open(p, "w") as f:
            for e in EV[-200000:]:
                f.write(f"{e[0]} {e[1]} {e[2]}\n")
atexit.register(_dump)
