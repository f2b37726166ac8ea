from tensorflow.keras import layers, models
model = models.Sequential()
model.add(layers.Rescaling(1./255, input_shape=(8, 8, 1)))
model.add(layers.Rescaling(scale=2.0, offset=-1.0))
model.add(layers.Conv2D(2, 3))
model.add(layers.experimental.preprocessing.Rescaling(1 / 127.5, -1))
model.add(layers.Flatten())
model.add(layers.Dense(3, activation='softmax'))
