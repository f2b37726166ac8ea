model = Sequential()
model.add(Conv2D(32,(3,3)
model.add(Dense(10,
                activation='relu'))
model.add(Dense(2)