# A CNN for Fashion-MNIST
import numpy as np
from tensorflow.keras.models import Sequential  # the model
from tensorflow.keras.layers import (Conv2D,
                                     Dense, Flatten)

"""A docstring with model.add(Dense(3)) inside
   over two lines."""
batch_size = 128
epochs = 10; verbose = 1
def build():
    model = Sequential()  # inside a function
    model.add(Conv2D(8, 3, input_shape=(28, 28, 1)))
    model.add(Flatten())
    model.add(Dense(10, activation='softmax'))
    return model

if __name__ == '__main__':
    model = build()
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')
