def widths(base, n):
    out = []
    for i in range(n):
        out = out + [base * 2 ** i]
    return out
def first_over(xs, t):
    for x in xs:
        if x > t:
            return x
    return None
def add_block(m, units, act=None):
    m.add(Dense(units, activation=act or 'relu'))
model = Sequential()
model.add(Dense(4, input_shape=(3,)))
for w, skip in zip(widths(2, 4), [False, True, False]):
    if skip:
        continue
    add_block(model, w)
add_block(model, first_over([1, 5, 9], 4), act='tanh' if 2 >= 3 else 'sigmoid')
print(add_block(model, 7))
