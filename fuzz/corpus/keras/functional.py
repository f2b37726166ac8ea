import keras
from keras import layers

inputs = keras.Input(shape=(8, 8, 1))
a = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
b = layers.Conv2D(2, 1)(inputs)
c = layers.Concatenate(axis=-1)([a, b, inputs])
y = layers.BatchNormalization()(layers.Conv2D(7, 3, padding="same")(c))
y = layers.Add()([y, c])
y = layers.Activation("relu")(y)
s = layers.Conv2D(8, 1, strides=2)(y)
y = layers.Conv2D(8, 3, strides=2, padding="same")(y)
y = layers.Add()([y, s])
outputs = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(y))
model = keras.Model(inputs=inputs, outputs=outputs, name="f")
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
