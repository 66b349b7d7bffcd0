import numpy as np, timeit
a = np.zeros((64, 256)); rows = [3, 5, 7, 9, 11, 13, 2]; cols = list(range(0, 68, 2))
vals = [0.5] * 34
n = 24
def t(stmt, **g):
    r = min(timeit.repeat(stmt, globals={**globals(), **g}, number=2000, repeat=5)) / 2000 * 1e6
    print(f"{r:6.2f} us  {stmt}")
t("np.array(vals)")
t("np.array(rows)[:, None]")
t("a[np.array(rows)[:, None], np.array(cols)]")
t("a[np.ix_(rows, cols)]")
t("a[rows][:, cols]")
x = a[np.array(rows)[:, None], np.array(cols)]; v = np.array(vals)
t("(x * v).sum(axis=1)")
t("x @ v")
t("np.empty((24, 30))")
t("np.bincount([1,2,3], weights=[1.,2.,3.], minlength=24)")
t("z.tolist()", z=np.zeros(24))
t("sum(map(float.__mul__, vals, vals))")
