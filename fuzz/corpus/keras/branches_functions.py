from keras import backend as K
from keras.layers import BatchNormalization as BN
import keras
from keras import layers

DATASET = "mnist"
if K.image_data_format() == "channels_first":
    input_shape = (1, 28, 28)
elif DATASET != "mnist":
    input_shape = (32, 32, 3)
else:
    input_shape = (28, 28, 1)
for i in range(2):
    width = 8 * i

def block(x, filters=16):
    return layers.Conv2D(filters, 3)(x)

def stem(t):
    y = layers.Conv2D(8, 3, padding="same")(t)
    return layers.add([t, y])

inputs = keras.Input(shape=input_shape)
x = layers.Conv2D(8, 3, padding="same")(inputs)
x = BN()(x)
y = layers.ReLU()(x)
x = layers.concatenate([x, y], axis=-1)
x = layers.Dropout(0.2)(x, training=False)
outputs = layers.Softmax()(layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
model = keras.Model(inputs, outputs, name="seed_net")
