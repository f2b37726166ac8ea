import keras
from keras import layers

filters = 4
filters *= 2
inputs = keras.Input(shape=(8, 8, 1))
x = layers.Conv2D(filters, 3, padding="same")(inputs)
shortcut = x
pair = [x, shortcut]
x = layers.Conv2D(filters, 3, padding="same")(x)
a, b = x, shortcut
x = layers.Add()([a, b])
del a, b
x += shortcut
def block(x, f=4):
    y = layers.Conv2D(f, 1)(x)
    return y
x = layers.Concatenate()(pair)
outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(x))
model = keras.Model(inputs, outputs)
