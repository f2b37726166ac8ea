# ResNet-20 v1 (He et al. 2015, "Deep Residual Learning for Image Recognition", Sec. 4.2: the
# 6n+2 network for 32x32 images with n = 3) for 28x28x1 Fashion-MNIST, in the Keras functional
# style. Post-activation blocks: Conv-BN-ReLU-Conv-BN, Add with the shortcut, ReLU. Three stages
# of 16, 32 and 64 filters with 3 blocks each; the first block of stages 2 and 3 halves the
# feature map with stride 2 and meets the shortcut through a 1x1 projection with stride 2 (He's
# option B; no BN on the projection, as the Keras CIFAR-10 ResNet example). Then global average
# pooling and Dense(10). 274,154 parameters (1,376 of them BN moving statistics): the worked count
# is in tests/test_graph.c. Written out flat, to read as a table; tests/test_graph.c reads the
# same model written with a block function and loops, as the same layers.
import keras
from keras import layers

inputs = keras.Input(shape=(28, 28, 1))
x = layers.Conv2D(16, 3, padding="same")(inputs)
x = layers.BatchNormalization()(x)
x = layers.Activation("relu")(x)

# stage 1, block 1: 16 filters
y = layers.Conv2D(16, 3, padding="same")(x)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(16, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
x = layers.Add()([y, x])
x = layers.Activation("relu")(x)

# stage 1, block 2: 16 filters
y = layers.Conv2D(16, 3, padding="same")(x)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(16, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
x = layers.Add()([y, x])
x = layers.Activation("relu")(x)

# stage 1, block 3: 16 filters
y = layers.Conv2D(16, 3, padding="same")(x)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(16, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
x = layers.Add()([y, x])
x = layers.Activation("relu")(x)

# stage 2, block 1: 32 filters, stride 2 and a projection shortcut
y = layers.Conv2D(32, 3, strides=2, padding="same")(x)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(32, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
shortcut = layers.Conv2D(32, 1, strides=2)(x)
x = layers.Add()([y, shortcut])
x = layers.Activation("relu")(x)

# stage 2, block 2: 32 filters
y = layers.Conv2D(32, 3, padding="same")(x)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(32, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
x = layers.Add()([y, x])
x = layers.Activation("relu")(x)

# stage 2, block 3: 32 filters
y = layers.Conv2D(32, 3, padding="same")(x)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(32, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
x = layers.Add()([y, x])
x = layers.Activation("relu")(x)

# stage 3, block 1: 64 filters, stride 2 and a projection shortcut
y = layers.Conv2D(64, 3, strides=2, padding="same")(x)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(64, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
shortcut = layers.Conv2D(64, 1, strides=2)(x)
x = layers.Add()([y, shortcut])
x = layers.Activation("relu")(x)

# stage 3, block 2: 64 filters
y = layers.Conv2D(64, 3, padding="same")(x)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(64, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
x = layers.Add()([y, x])
x = layers.Activation("relu")(x)

# stage 3, block 3: 64 filters
y = layers.Conv2D(64, 3, padding="same")(x)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(64, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
x = layers.Add()([y, x])
x = layers.Activation("relu")(x)

x = layers.GlobalAveragePooling2D()(x)
outputs = layers.Dense(10, activation="softmax")(x)
model = keras.Model(inputs=inputs, outputs=outputs, name="resnet20_v1")
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
