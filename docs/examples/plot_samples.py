"""
Samples versus data
===================

TODO
"""

import matplotlib.pyplot as plt
import numpy as np

fig, ax = plt.subplots()
ax.plot(np.arange(3))
plt.show()
