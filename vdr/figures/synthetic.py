"""Labelled figure images for training the figure classifier: every kind drawn by matplotlib
(charts, tables, diagrams, 3-D surfaces) or cut from the photographs scikit-image ships, each
with random data, colours, sizes, styles and labels, so that the classifier learns a kind's
look rather than one rendering of it.

Nothing here is read from documents: the images are made on the spot, and an image's label is
the kind the generator drew. vdr.figures.train draws them; vdr never does at index time.
"""

from __future__ import annotations

import io
import random
import string
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps

# Palettes documents use: matplotlib's cycles, pgfplots-like primaries, greys only.
_PALETTES = (
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"],
    ["red", "blue", "green", "orange", "purple", "black"],
    ["#333333", "#777777", "#aaaaaa", "#cccccc", "#555555", "#999999"],
    ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33"],
    ["navy", "teal", "olive", "maroon", "gold", "grey"],
)


def _words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(n)]


def _figure(rng: random.Random):  # -> (Figure, Axes), imported lazily (matplotlib is heavy)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.style.use(
        rng.choice(["default", "classic", "ggplot", "bmh", "grayscale", "seaborn-v0_8-whitegrid"])
    )
    size = (rng.uniform(3, 7), rng.uniform(2.2, 5.5))
    figure = plt.figure(figsize=size, dpi=rng.choice([60, 80, 100]))
    return figure


def _finish(figure, axes, rng: random.Random) -> Image.Image:
    import matplotlib.pyplot as plt

    if axes is not None:
        if rng.random() < 0.6:
            axes.set_title(" ".join(_words(rng, rng.randint(1, 4))), fontsize=rng.randint(8, 13))
        if rng.random() < 0.6:
            axes.set_xlabel(" ".join(_words(rng, rng.randint(1, 2))))
        if rng.random() < 0.5:
            axes.set_ylabel(" ".join(_words(rng, rng.randint(1, 2))))
        if rng.random() < 0.3:
            axes.grid(True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight" if rng.random() < 0.8 else None)
    plt.close(figure)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _colours(rng: random.Random, n: int) -> list[str]:
    palette = list(rng.choice(_PALETTES))
    rng.shuffle(palette)
    return (palette * n)[:n]


def bar(rng: random.Random, stacked: bool = False, horizontal: bool = False) -> Image.Image:
    figure = _figure(rng)
    axes = figure.add_subplot()
    n, series = rng.randint(3, 12), rng.randint(2, 4) if stacked else rng.choice([1, 1, 2, 3])
    x = np.arange(n)
    colours = _colours(rng, series)
    bottom = np.zeros(n)
    width = 0.8 / (1 if stacked else series)
    for s in range(series):
        values = np.array([rng.uniform(1, 10) for _ in range(n)])
        offset = 0 if stacked else (s - (series - 1) / 2) * width
        kwargs = {"color": colours[s], "edgecolor": rng.choice(["black", colours[s]])}
        if rng.random() < 0.15:
            kwargs["hatch"] = rng.choice(["//", "xx", "..", "\\\\"])
        if horizontal:
            axes.barh(x + offset, values, height=width, left=bottom if stacked else None, **kwargs)
        else:
            axes.bar(x + offset, values, width=width, bottom=bottom if stacked else None, **kwargs)
        bottom = bottom + values
    labels = _words(rng, n) if rng.random() < 0.6 else [str(1990 + i) for i in range(n)]
    (axes.set_yticks if horizontal else axes.set_xticks)(x, labels, fontsize=rng.randint(6, 9))
    if series > 1 and rng.random() < 0.6:
        axes.legend(_words(rng, series), fontsize=7)
    return _finish(figure, axes, rng)


def line(rng: random.Random, area: bool = False) -> Image.Image:
    figure = _figure(rng)
    axes = figure.add_subplot()
    n = rng.randint(8, 120)
    x = np.linspace(0, rng.uniform(5, 100), n)
    total = np.zeros(n)
    for colour in _colours(rng, rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.4:
            y = np.cumsum(np.array([rng.gauss(0, 1) for _ in range(n)]))
        elif kind < 0.7:
            y = np.sin(x * rng.uniform(0.05, 0.5) + rng.uniform(0, 6)) * rng.uniform(1, 5)
        else:
            y = rng.uniform(0.5, 3) * x ** rng.uniform(0.3, 2)
        if area:
            y = np.abs(y) + 0.5
            axes.fill_between(x, total, total + y, color=colour, alpha=rng.uniform(0.5, 1))
            total = total + y
        else:
            marker = rng.choice([None, None, "o", "s", "^", "x"])
            axes.plot(
                x,
                y,
                color=colour,
                marker=marker,
                markersize=3,
                linewidth=rng.uniform(1, 2.5),
                linestyle=rng.choice(["-", "-", "--", ":"]),
            )
    if rng.random() < 0.15 and not area:
        axes.set_yscale("symlog")
    return _finish(figure, axes, rng)


def scatter(rng: random.Random) -> Image.Image:
    figure = _figure(rng)
    axes = figure.add_subplot()
    for colour in _colours(rng, rng.randint(1, 3)):
        n = rng.randint(15, 400)
        x = np.array([rng.gauss(0, 1) for _ in range(n)])
        y = x * rng.uniform(-2, 2) + np.array([rng.gauss(0, 1) for _ in range(n)])
        axes.scatter(
            x,
            y,
            s=rng.uniform(3, 40),
            color=colour,
            marker=rng.choice(["o", "s", "^", "x", "+"]),
            alpha=rng.uniform(0.5, 1),
        )
    return _finish(figure, axes, rng)


def pie(rng: random.Random) -> Image.Image:
    figure = _figure(rng)
    axes = figure.add_subplot()
    n = rng.randint(2, 8)
    wedge = {"width": rng.uniform(0.3, 0.6)} if rng.random() < 0.3 else None
    axes.pie(
        [rng.uniform(1, 10) for _ in range(n)],
        colors=_colours(rng, n),
        labels=_words(rng, n) if rng.random() < 0.7 else None,
        autopct="%1.0f%%" if rng.random() < 0.4 else None,
        wedgeprops=wedge,
        startangle=rng.uniform(0, 360),
    )
    return _finish(figure, None, rng)


def histogram(rng: random.Random) -> Image.Image:
    figure = _figure(rng)
    axes = figure.add_subplot()
    for colour in _colours(rng, rng.choice([1, 1, 2])):
        data = [
            rng.gauss(rng.uniform(-2, 2), rng.uniform(0.5, 2))
            for _ in range(rng.randint(100, 2000))
        ]
        axes.hist(
            data,
            bins=rng.randint(8, 50),
            color=colour,
            alpha=rng.uniform(0.5, 1),
            edgecolor=rng.choice(["black", "white", colour]),
        )
    return _finish(figure, axes, rng)


def box(rng: random.Random) -> Image.Image:
    figure = _figure(rng)
    axes = figure.add_subplot()
    n = rng.randint(2, 8)
    data = [
        [rng.gauss(rng.uniform(0, 5), rng.uniform(0.3, 2)) for _ in range(60)] for _ in range(n)
    ]
    parts = axes.boxplot(data, patch_artist=rng.random() < 0.6, vert=rng.random() < 0.8)
    for patch, colour in zip(parts["boxes"], _colours(rng, n), strict=False):
        if hasattr(patch, "set_facecolor"):
            patch.set_facecolor(colour)
    return _finish(figure, axes, rng)


def heatmap(rng: random.Random) -> Image.Image:
    figure = _figure(rng)
    axes = figure.add_subplot()
    rows, cols = rng.randint(4, 40), rng.randint(4, 40)
    data = np.cumsum(np.random.default_rng(rng.randint(0, 10**6)).normal(size=(rows, cols)), axis=1)
    shown = axes.imshow(
        data, cmap=rng.choice(["viridis", "hot", "coolwarm", "gray", "jet", "Blues"]), aspect="auto"
    )
    if rng.random() < 0.7:
        figure.colorbar(shown)
    return _finish(figure, axes, rng)


def surface(rng: random.Random) -> Image.Image:
    figure = _figure(rng)
    axes = figure.add_subplot(projection="3d")
    grid = np.linspace(-3, 3, rng.randint(15, 40))
    x, y = np.meshgrid(grid, grid)
    a, b = rng.uniform(0.3, 2), rng.uniform(0.3, 2)
    z = (
        np.sin(a * x) * np.cos(b * y)
        if rng.random() < 0.5
        else np.exp(-(x**2 + y**2) / rng.uniform(1, 6))
    )
    if rng.random() < 0.6:
        axes.plot_surface(
            x, y, z, cmap=rng.choice(["viridis", "coolwarm", "jet", "gray", "autumn"])
        )
    else:
        axes.plot_wireframe(x, y, z, color=_colours(rng, 1)[0], linewidth=0.6)
    axes.view_init(rng.uniform(15, 60), rng.uniform(0, 360))
    return _finish(figure, None, rng)


def table(rng: random.Random) -> Image.Image:
    figure = _figure(rng)
    axes = figure.add_subplot()
    axes.axis("off")
    rows, cols = rng.randint(3, 14), rng.randint(2, 7)
    cells = [
        [
            (
                rng.choice(_words(rng, 3))
                if rng.random() < 0.3
                else f"{rng.uniform(0, 999):.{rng.randint(0, 2)}f}"
            )
            for _ in range(cols)
        ]
        for _ in range(rows)
    ]
    shown = axes.table(
        cellText=cells,
        colLabels=_words(rng, cols),
        loc="center",
        edges=rng.choice(["closed", "horizontal", "open", "closed"]),
    )
    shown.scale(1, rng.uniform(1, 1.8))
    if rng.random() < 0.4:
        for col in range(cols):
            shown[0, col].set_facecolor(_colours(rng, 1)[0])
    return _finish(figure, None, rng)


def diagram(rng: random.Random) -> Image.Image:
    """Boxes, circles and diamonds with labels, joined by arrows: a flowchart or block diagram."""
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    figure = _figure(rng)
    axes = figure.add_subplot()
    axes.axis("off")
    axes.set_xlim(0, 10)
    axes.set_ylim(0, 10)
    n = rng.randint(3, 9)
    centres = [(rng.uniform(1, 9), rng.uniform(1, 9)) for _ in range(n)]
    fill = rng.choice(["white", "white", *_colours(rng, 3)])
    for x, y in centres:
        if rng.random() < 0.7:
            axes.add_patch(
                FancyBboxPatch(
                    (x - 0.9, y - 0.4),
                    1.8,
                    0.8,
                    boxstyle=rng.choice(["round,pad=0.1", "square,pad=0.05"]),
                    facecolor=fill,
                    edgecolor="black",
                )
            )
        else:
            axes.add_patch(Circle((x, y), 0.55, facecolor=fill, edgecolor="black"))
        axes.text(x, y, rng.choice(_words(rng, 2)), ha="center", va="center", fontsize=7)
    for i in range(n - 1 + rng.randint(0, 3)):
        a, b = centres[i % n], centres[(i + 1) % n]
        axes.add_patch(
            FancyArrowPatch(
                a,
                b,
                arrowstyle="-|>",
                mutation_scale=12,
                color="black",
                connectionstyle=rng.choice(["arc3", "arc3,rad=0.2"]),
            )
        )
    return _finish(figure, None, rng)


def photograph(rng: random.Random) -> Image.Image:
    """A crop of one of scikit-image's photographs, resized, recoloured and sharpened or not."""
    import skimage.data

    name = rng.choice(PHOTOS)
    picture = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    width, height = picture.size
    crop_w, crop_h = int(width * rng.uniform(0.5, 1)), int(height * rng.uniform(0.5, 1))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    picture = picture.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.3:
        picture = ImageOps.grayscale(picture).convert("RGB")
    if rng.random() < 0.5:
        picture = ImageOps.mirror(picture)
    return picture


PHOTOS = (
    "astronaut",
    "camera",
    "cat",
    "chelsea",
    "coffee",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
    "clock",
    "grass",
    "gravel",
    "brick",
    "horse",
)

# Every kind the classifier tells apart, in a fixed order (its output index), with its drawer.
KINDS: dict[str, Callable[[random.Random], Image.Image]] = {
    "bar chart": bar,
    "stacked bar chart": lambda rng: bar(rng, stacked=True, horizontal=rng.random() < 0.3),
    "horizontal bar chart": lambda rng: bar(rng, horizontal=True),
    "line chart": line,
    "area chart": lambda rng: line(rng, area=True),
    "scatter plot": scatter,
    "pie chart": pie,
    "histogram": histogram,
    "box plot": box,
    "heatmap": heatmap,
    "3d surface plot": surface,
    "table": table,
    "diagram": diagram,
    "photograph": photograph,
}


def labelled_image(rng: random.Random, kind: str) -> Image.Image:
    """One image of `kind`, as it might look cropped from a page rendered at 150 dpi: its
    margins cropped or padded, sometimes blurred as a rendering at a lower dpi would be."""
    image = KINDS[kind](rng)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.4:
        pad = rng.randint(2, 30)
        image = ImageOps.expand(image, border=pad, fill="white")
    return image
