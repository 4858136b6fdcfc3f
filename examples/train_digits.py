"""End to end: a small residual CNN in NumPy on scikit-learn's digits, with cnorm's fused
BatchNormAct2d blocks; then batch norm folded into the convolutions for inference.

    python examples/train_digits.py [--epochs 8] [--out DIR]

Data: sklearn.datasets.load_digits (1797 8x8 images, bundled with scikit-learn: nothing is
downloaded), standardized per pixel with cnorm.Standardizer. Model: conv3x3(1->16) ->
BatchNormAct2d(relu) -> [conv3x3 -> BatchNormAct2d(relu) -> conv3x3 -> BatchNormAct2d(relu,
residual)] -> linear(16*8*8 -> 10), trained with SGD and momentum. After
training the batch norms are folded into the convolutions (cnorm.fold_batch_norm) and the
folded model must predict the same classes. Shows a progress bar per epoch (tqdm when
installed) and writes a loss/accuracy chart to DIR when matplotlib is installed.
"""
import argparse
import os
import sys
import time

import numpy as np

import cnorm


def im2col(x):
    """(N, C, H, W) -> (N*H*W, C*9): the 3x3 neighbourhoods, zero-padded by 1."""
    N, C, H, W = x.shape
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(p, (3, 3), axis=(2, 3))  # N,C,H,W,3,3
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(N * H * W, C * 9)


def col2im(cols, shape):
    """The adjoint of im2col: (N*H*W, C*9) -> (N, C, H, W), overlapping windows summed."""
    N, C, H, W = shape
    c = cols.reshape(N, H, W, C, 3, 3)
    out = np.zeros((N, C, H + 2, W + 2), cols.dtype)
    for i in range(3):
        for j in range(3):
            out[:, :, i:i + H, j:j + W] += c[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return out[:, :, 1:-1, 1:-1]


class Conv:
    """3x3 convolution, stride 1, padding 1, through im2col."""

    def __init__(self, cin, cout, rng):
        self.w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (9 * cin))).astype(
            np.float32)
        self.b = np.zeros(cout, np.float32)

    def forward(self, x):
        self.shape, self.cols = x.shape, im2col(x)
        N, _, H, W = x.shape
        y = self.cols @ self.w.reshape(len(self.w), -1).T + self.b
        return y.reshape(N, H, W, -1).transpose(0, 3, 1, 2)  # channels-last memory

    def backward(self, dy):
        g = np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(-1, len(self.w))
        self.dw = (g.T @ self.cols).reshape(self.w.shape)
        self.db = g.sum(axis=0)
        return col2im(g @ self.w.reshape(len(self.w), -1), self.shape)


class Net:
    def __init__(self, seed=0, width=16):
        rng = np.random.default_rng(seed)
        self.c1, self.c2, self.c3 = (Conv(1, width, rng), Conv(width, width, rng),
                                     Conv(width, width, rng))
        self.n1, self.n2, self.n3 = (cnorm.BatchNormAct2d(width) for _ in range(3))
        self.fc = (rng.standard_normal((width * 64, 10)) / np.sqrt(width * 64)).astype(
            np.float32)
        self.fb = np.zeros(10, np.float32)

    def forward(self, x):
        a1 = self.n1(self.c1.forward(x))
        a2 = self.n2(self.c2.forward(a1))
        a3 = self.n3(self.c3.forward(a2), residual=a1)  # act(bn(conv(a2)) + a1), fused
        self.flat, self.a3_shape = a3.reshape(len(a3), -1), a3.shape
        return self.flat @ self.fc + self.fb

    def backward(self, dlogits):
        self.dfc, self.dfb = self.flat.T @ dlogits, dlogits.sum(axis=0)
        da3 = (dlogits @ self.fc.T).reshape(self.a3_shape)
        dc3 = self.n3.backward(da3.astype(np.float32))
        da2 = self.c3.backward(dc3)
        da1 = self.c2.backward(self.n2.backward(da2.astype(np.float32))) + \
            self.n3.grad_residual
        self.c1.backward(self.n1.backward(da1.astype(np.float32)))

    def params(self):
        """(array, gradient) pairs, updated in place."""
        out = [(self.fc, self.dfc), (self.fb, self.dfb)]
        for conv, norm in ((self.c1, self.n1), (self.c2, self.n2), (self.c3, self.n3)):
            out += [(conv.w, conv.dw), (conv.b, conv.db), (norm.weight, norm.grad_weight),
                    (norm.bias, norm.grad_bias)]
        return out

    def eval(self):
        for n in (self.n1, self.n2, self.n3):
            n.eval()
        return self


def softmax_loss(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels] + 1e-12).mean()
    g = p
    g[np.arange(n), labels] -= 1
    return loss, g / n


def folded_predict(net, x):
    """Inference with every batch norm folded into its convolution (cnorm.fold_batch_norm);
    the activations and the residual stay, applied after the folded convolutions."""
    def fold(conv, norm):
        plain = cnorm.BatchNorm2d(norm.num_features).eval()  # the norm alone: foldable
        plain.load_state_dict(norm.state_dict())
        return cnorm.fold_batch_norm(conv.w, conv.b, plain)

    def conv(x, wb):
        N, _, H, W = x.shape
        y = im2col(x) @ wb[0].reshape(len(wb[0]), -1).T + wb[1]
        return y.reshape(N, H, W, -1).transpose(0, 3, 1, 2)

    f1, f2, f3 = fold(net.c1, net.n1), fold(net.c2, net.n2), fold(net.c3, net.n3)
    a1 = np.maximum(conv(x, f1), 0)
    a2 = np.maximum(conv(a1, f2), 0)
    a3 = np.maximum(conv(a2, f3) + a1, 0)
    return (a3.reshape(len(a3), -1) @ net.fc + net.fb).argmax(axis=1)


def progress(iterable, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(desc, flush=True)
        return iterable
    return tqdm(iterable, desc=desc, leave=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--out", default=".", help="folder for the chart (train_digits.png)")
    args = ap.parse_args(argv)
    from sklearn.datasets import load_digits

    start = time.perf_counter()
    digits = load_digits()
    X, y = digits.data.astype(np.float32), digits.target
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:1437], order[1437:]
    scaler = cnorm.Standardizer().fit(X[train])  # per pixel, as StandardScaler
    Xs = scaler.transform(X).reshape(-1, 1, 8, 8)
    net = Net()
    velocity = None
    history = []
    rng = np.random.default_rng(1)
    for epoch in range(args.epochs):
        idx = rng.permutation(train)
        losses = []
        for s in progress(range(0, len(idx), args.batch), f"epoch {epoch + 1}/{args.epochs}"):
            b = idx[s:s + args.batch]
            if len(b) < 2:  # batch norm needs two samples
                continue
            for n in (net.n1, net.n2, net.n3):
                n.train()
            loss, g = softmax_loss(net.forward(Xs[b]), y[b])
            net.backward(g.astype(np.float32))
            if velocity is None:
                velocity = [np.zeros_like(p) for p, _ in net.params()]
            for v, (p, dp) in zip(velocity, net.params()):
                v *= 0.9
                v -= args.lr * dp
                p += v.astype(p.dtype)
            losses.append(loss)
        net.eval()
        acc = float((net.forward(Xs[test]).argmax(axis=1) == y[test]).mean())
        history.append((float(np.mean(losses)), acc))
        print(f"epoch {epoch + 1}: loss {history[-1][0]:.4f}, test accuracy {acc:.4f}",
              flush=True)
    seconds = time.perf_counter() - start
    net.eval()
    pred = net.forward(Xs[test]).argmax(axis=1)
    folded = folded_predict(net, Xs[test])
    same = float((pred == folded).mean())
    print(f"test accuracy {history[-1][1]:.4f} after {args.epochs} epochs in {seconds:.1f} s; "
          f"folded model agrees on {same:.4f} of the test images")
    if same < 1.0:
        print("the folded model disagrees", file=sys.stderr)
        return 1
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    epochs = range(1, len(history) + 1)
    ax[0].plot(epochs, [h[0] for h in history])
    ax[0].set_title("training loss")
    ax[1].plot(epochs, [h[1] for h in history])
    ax[1].set_title("test accuracy")
    for a in ax:
        a.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "train_digits.png"), dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
