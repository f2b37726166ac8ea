from keras import layers
model = keras.Sequential([
    layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)),
    layers.MaxPooling2D(),
    layers.Flatten(),
    layers.Dense(3, activation="softmax"),
])
model.compile(optimizer=Adam(learning_rate=5e-4, beta_1=0.8), loss="sparse_categorical_crossentropy")
