"""The StylEx training step in TF, against the port's (``models_pt.stylex.StylExTrainer``).

``tf_steps`` writes the step once more, in TF on the reference models of ``models_tf`` (holding
the port's weights through the mapping rules undone), with ``tf.GradientTape`` (nested for R1
and the path length) and ``tf_keras.optimizers.Adam``: the discriminator phase (logistic loss,
R1 on its lazy steps weighted by its interval), the generator-and-encoder phase in the branch
the step's parity picks (encoder: the adversarial loss on ``G(E(x) ++ C(x))``, the image and w
reconstructions, the classifier's KL; mapping network: the adversarial loss), the path length on
its steps, the Adam updates and the EMA. Both sides take the same draws (``StepInputs``).

``compare`` runs both for a few steps in float64 and judges, step by step, every loss term,
every gradient (TF's mapped into PyTorch's layout by the same rules as the weights), every
updated weight and the EMA generator, with the project's float64 rule
(``porting.verdict.judge``: ``|TF - PT| <= 1e-9 max(1, max|TF|)``). ``CONTROLS`` are deliberately
wrong trainers that the comparison must fail.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from crosscheck.export import tf_model_holding
from porting import mapping
from porting.verdict import RULE, Report, judged, port_runs



def tf_model_of(module, dtype: str = "float64"):
    """The TF reference model holding a PyTorch module's weights, and its mapping plan."""
    config = {**module.config, **({"dropout": 0.0} if module.kind == "classifier" else {})}
    state = {k: v.detach().double() if v.is_floating_point() else v for k, v in module.state_dict().items()}
    return tf_model_holding(module.kind, config, state, f"the port's {module.kind}", dtype)


class TFStylEx:
    """The StylEx step in TF (float64), the models rebuilt from the port's modules."""

    def __init__(self, G, E, D, C, objective, lr: float, betas, eps: float):
        import tf_keras as keras

        self.pt = {"generator": G, "encoder": E, "discriminator": D, "classifier": C}
        built = {k: tf_model_of(v) for k, v in self.pt.items()}
        self.m = {k: model for k, (model, _) in built.items()}
        self.plans = {k: plan for k, (_, plan) in built.items()}   # one plan per kind, for every mapping back
        self.objective = objective
        self.ema = {v.name: v.numpy().copy() for v in self.m["generator"].trainable_variables}

        def adam():
            return keras.optimizers.Adam(learning_rate=lr, beta_1=betas[0], beta_2=betas[1], epsilon=eps)

        self.opt_d, self.opt_g = adam(), adam()
        self.pl_mean = 0.0
        self.steps_done = 0

    # the models as the step calls them
    def G(self, w, noise):
        g = self.m["generator"]
        return g.g_synthesis.run(g.style_vector_calculator(w), noise=noise)

    def mapping(self, z, probs):
        return self.m["generator"].generator_mapping((z, probs))

    def E(self, x):
        return self.m["encoder"](x, training=True)

    def D(self, x, probs):
        return self.m["discriminator"]((x, probs), training=True)

    def C(self, x):
        import tensorflow as tf

        return self.m["classifier"](tf.transpose(x, [0, 2, 3, 1]), training=False)   # the TF model is NHWC

    def fake(self, inp, branch, phase):
        import tensorflow as tf

        noise = inp["d_noise"] if phase == "d" else inp["g_noise"]
        if branch == "encoder":
            latent = self.E(inp["real"])
            return self.G(tf.concat([latent, inp["probs"]], 1), noise), inp["probs"], latent
        z, probs = (inp["d_z"], inp["d_probs"]) if phase == "d" else (inp["g_z"], inp["g_probs"])
        return self.G(self.mapping(z, probs), noise), probs, None

    def step(self, inputs) -> dict:
        """One step on ``inputs`` (``StepInputs``); returns the loss terms, the gradients by phase
        (TF variable name -> array) and nothing else is changed but the weights, EMA and mean."""
        import tensorflow as tf

        obj, step = self.objective, self.steps_done
        branch = obj.branch(step)
        inp = {k: ([tf.constant(t.detach().double().numpy()) for t in v] if isinstance(v, list)
                   else tf.constant(v.detach().double().numpy())) for k, v in vars(inputs).items()}
        sp = tf.math.softplus
        out = {"terms": {}, "grads": {}}
        d_vars = self.m["discriminator"].trainable_variables
        with tf.GradientTape() as tape:
            fake, cond, _ = self.fake(inp, branch, "d")
            fake = tf.stop_gradient(fake)
            real_term = tf.reduce_mean(sp(-self.D(inp["real"], inp["probs"])))
            fake_term = tf.reduce_mean(sp(self.D(fake, cond)))
            loss = real_term + fake_term
            out["terms"].update({"D real": real_term, "D fake": fake_term})
            if obj.r1_due(step):
                x = inp["real"]
                with tf.GradientTape() as inner:
                    inner.watch(x)
                    score = tf.reduce_sum(self.D(x, inp["probs"]))
                r1 = tf.reduce_mean(tf.reduce_sum(tf.square(inner.gradient(score, x)), axis=[1, 2, 3]))
                out["terms"]["R1"] = r1
                loss = loss + obj.r1_gamma / 2 * obj.r1_interval * r1
        grads = tape.gradient(loss, d_vars)
        out["grads"]["discriminator"] = {v.name: g.numpy() for v, g in zip(d_vars, grads) if g is not None}
        self.opt_d.apply_gradients([(g, v) for g, v in zip(grads, d_vars) if g is not None])

        g_vars = self.m["generator"].trainable_variables + self.m["encoder"].trainable_variables
        lengths = None
        with tf.GradientTape() as tape:
            fake, cond, latent = self.fake(inp, branch, "g")
            adv = tf.reduce_mean(sp(-self.D(fake, cond)))
            out["terms"]["G adversarial"] = adv
            loss = obj.adversarial * adv
            if branch == "encoder":
                rec = tf.reduce_mean(tf.abs(fake - inp["real"]))
                rec_w = tf.reduce_mean(tf.abs(self.E(fake) - latent))
                log_p = tf.nn.log_softmax(tf.stop_gradient(self.C(inp["real"])), axis=1)
                log_q = tf.nn.log_softmax(self.C(fake), axis=1)
                kl = tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=1))
                out["terms"].update({"reconstruction image L1": rec, "reconstruction w L1": rec_w,
                                     "classifier KL": kl})
                loss = loss + obj.rec_image * rec + obj.rec_w * rec_w + obj.classifier_kl * kl
            if obj.pl_due(step):
                w = self.mapping(inp["pl_z"], inp["pl_probs"])
                with tf.GradientTape() as inner:
                    inner.watch(w)
                    s = tf.reduce_sum(self.G(w, inp["pl_noise"]) * inp["pl_y"])
                lengths = tf.sqrt(tf.reduce_sum(tf.square(inner.gradient(s, w)), axis=1))
                penalty = tf.reduce_mean(tf.square(lengths - self.pl_mean))
                out["terms"]["path length"] = penalty
                loss = loss + obj.path_length * obj.pl_interval * penalty
        grads = tape.gradient(loss, g_vars)
        n_g = len(self.m["generator"].trainable_variables)
        out["grads"]["generator"] = {v.name: g.numpy() for v, g in zip(g_vars[:n_g], grads[:n_g]) if g is not None}
        out["grads"]["encoder"] = {v.name: g.numpy() for v, g in zip(g_vars[n_g:], grads[n_g:]) if g is not None}
        self.opt_g.apply_gradients([(g, v) for g, v in zip(grads, g_vars) if g is not None])
        if lengths is not None:
            self.pl_mean = self.pl_mean + obj.pl_decay * (float(tf.reduce_mean(lengths)) - self.pl_mean)
        beta = obj.ema_beta
        for v in self.m["generator"].trainable_variables:
            self.ema[v.name] = v.numpy() + beta * (self.ema[v.name] - v.numpy())
        self.steps_done += 1
        out["terms"] = {k: float(v) for k, v in out["terms"].items()}
        return out

    def pt_layout(self, kind: str, values: dict, gradients: bool) -> dict:
        """TF variables (or their gradients, where there was one) -> PyTorch keys, by the kind's plan."""
        model, plan = self.m[kind], self.plans[kind]
        pt_shapes = {k: tuple(v.shape) for k, v in self.pt[kind].state_dict().items()}
        full = {v.name: values[v.name] if values.get(v.name) is not None else np.zeros(v.shape) for v in model.variables}
        out = mapping.apply(plan, full, pt_shapes, where=f"TF {kind}", gradients=gradients, allow_nonfinite=True)
        if gradients:   # only the variables that had a gradient
            had = {a.pt_key for a in plan.assignments if a.tf_name and values.get(a.tf_name) is not None}
            out = {k: v for k, v in out.items() if k in had}
        return out

    def weights(self) -> dict[str, dict]:
        """Every model's weights in PyTorch's layout; ``G_ema``: the EMA generator's."""
        out = {k: self.pt_layout(k, {v.name: v.numpy() for v in self.m[k].variables}, False)
               for k in ("generator", "encoder", "discriminator")}
        ema = {v.name: v.numpy() for v in self.m["generator"].variables}
        ema.update(self.ema)
        out["G_ema"] = self.pt_layout("generator", ema, False)
        return out

    def grads_pt(self, grads: dict) -> dict[str, dict]:
        return {k: self.pt_layout(k, g, True) for k, g in grads.items()}


class RecordingSync:
    """A one-process ``sync`` that keeps a copy of every gradient the trainer is about to apply."""

    world = 1

    def __init__(self, names: dict):
        self.names, self.grads_seen = names, {}

    def grads(self, params) -> None:
        for p in params:
            if p.grad is not None:
                kind, key = self.names[id(p)]
                self.grads_seen.setdefault(kind, {})[key] = p.grad.detach().double().numpy().copy()

    def mean(self, t):
        return t


@dataclass
class StepComparison:
    """The rows of every step and the report that judges them."""

    report: Report
    steps: list = field(default_factory=list)     # per step: branch, R1, path length due


def tf_run(modules: dict, objective, inputs: list, lr: float, betas, eps: float) -> list[dict]:
    """TF's steps from ``modules``' weights (float64): per step the loss terms, the gradients and
    the weights after it in PyTorch's layout, and the path-length mean. Computed once, then any
    number of PyTorch trainers (the port, the controls) are judged against it."""
    import torch

    pt = {k: copy.deepcopy(m).double() for k, m in modules.items()}
    tfs = TFStylEx(pt["generator"], pt["encoder"], pt["discriminator"], pt["classifier"], objective, lr, betas, eps)
    out = []
    for inp in inputs:
        step = tfs.step(inp.to(dtype=torch.float64))
        out.append({"terms": step["terms"], "grads": tfs.grads_pt(step["grads"]), "weights": tfs.weights(),
                    "pl_mean": tfs.pl_mean})
    return out


def compare(trainer_factory, modules: dict, objective, inputs: list, tf_steps: list, rule=RULE,
            label: str = "StylEx step") -> StepComparison:
    """Run the port (``trainer_factory(G, E, D, C, objective, sync)``, on float64 copies of
    ``modules``, made by the verdict's pipeline ``porting.verdict.port_runs``) for
    ``len(inputs)`` steps and judge (``judged``), after each, every loss term, gradient, weight,
    the EMA generator and the path-length mean against ``tf_steps`` (``tf_run``). A quantity one
    side lacks is a row the other side's value fails (infinity)."""
    import torch

    truth: dict = {}
    steps: list = []

    def run(pt: dict, dtype: str) -> dict:
        names = {id(p): (kind, n) for kind in ("generator", "encoder", "discriminator")
                 for n, p in pt[kind].named_parameters()}
        sync = RecordingSync(names)
        trainer = trainer_factory(pt["generator"], pt["encoder"], pt["discriminator"], pt["classifier"], objective, sync)
        got: dict = {}

        def pair(name, want, have):     # copies: the live weights move on with the next step
            truth[name], got[name] = np.array(want, copy=True), np.array(have, copy=True)

        for s, (inp, tf_out) in enumerate(zip(inputs, tf_steps)):
            sync.grads_seen = {}
            pt_terms = trainer.step(inp.to(dtype=torch.float64))
            steps.append({"step": s, "branch": objective.branch(s), "R1": objective.r1_due(s),
                          "path length": objective.pl_due(s)})
            for name, value in tf_out["terms"].items():
                have = pt_terms.get(name)
                pair(f"step {s} loss {name}", np.array(value), np.array(np.inf if have is None else have))
            for name in set(pt_terms) - set(tf_out["terms"]) - {"branch"}:
                pair(f"step {s} loss {name} (TF has none)", np.array(0.0), np.array(np.inf))
            for kind in ("discriminator", "generator", "encoder"):
                mine, theirs = sync.grads_seen.get(kind, {}), tf_out["grads"].get(kind, {})
                for key in sorted(set(mine) | set(theirs)):
                    want = theirs[key] if key in theirs else np.zeros_like(mine[key])
                    pair(f"step {s} grad {kind}.{key}", want, mine[key] if key in mine else np.full_like(want, np.inf))
            for kind, module in (("generator", trainer.G), ("encoder", trainer.E), ("discriminator", trainer.D),
                                 ("G_ema", trainer.G_ema)):
                state = module.state_dict()
                for key, want in tf_out["weights"][kind].items():
                    if key in state and state[key].is_floating_point():
                        pair(f"step {s} weight {kind}.{key}", want, state[key].detach().double().numpy())
            pair(f"step {s} path-length mean", np.array(tf_out["pl_mean"]), np.array(float(trainer.pl_mean)))
        return got

    runs = port_runs(modules, run, "float64")
    report = judged(label, truth, runs, rule=rule, source="TF (models_tf, tf_keras Adam)", weights="models_pt.stylex",
                    described=f"{len(inputs)} steps of {inputs[0].real.shape[0]} images")
    return StepComparison(report, steps)


# ---------------------------------------------------------------------- negative controls
def _controls():
    import torch

    from models_pt.stylex import ENCODER, StylExTrainer

    class EncoderDetached(StylExTrainer):
        """The reconstruction's latent taken without its gradient: the encoder learns nothing from it."""

        def fake(self, inp, branch, phase):
            images, probs, latent = super().fake(inp, branch, phase)
            if branch == ENCODER and phase == "g":
                w = torch.cat([latent.detach(), inp.probs.to(latent.dtype)], dim=1)
                images = self.G(w, noise=inp.g_noise)
            return images, probs, latent

    class NoClassifierTerm(StylExTrainer):
        """The classifier's KL term left out of the loss (still logged)."""

        def g_losses(self, inp, step):
            loss, terms = super().g_losses(inp, step)
            if "classifier KL" in terms:
                loss = loss - self.objective.classifier_kl * terms["classifier KL"]
            return loss, terms

    class R1NotLazyScaled(StylExTrainer):
        """R1 weighted by gamma / 2 alone, its lazy interval forgotten."""

        def d_losses(self, inp, step):
            loss, terms = super().d_losses(inp, step)
            if "R1" in terms:
                obj = self.objective
                loss = loss - obj.r1_gamma / 2 * (obj.r1_interval - 1) * terms["R1"]
            return loss, terms

    class WrongEmaBeta(StylExTrainer):
        """The EMA's beta 0.99 where the objective says otherwise."""

        def update_ema(self, beta):
            super().update_ema(0.99 if beta != 0.99 else 0.999)

    return {"encoder_detached": EncoderDetached, "classifier_term_dropped": NoClassifierTerm,
            "r1_not_scaled_by_interval": R1NotLazyScaled, "wrong_ema_beta": WrongEmaBeta}


def trainer_factory(cls=None, lr: float = 0.002, betas=(0.0, 0.99), eps: float = 1e-8):
    """``compare``'s factory for ``StylExTrainer`` (or a control's class) with Keras' Adam."""
    from models_pt.stylex import StylExTrainer

    cls = cls or StylExTrainer

    def make(G, E, D, C, objective, sync):
        return cls(G, E, D, C, objective, lr=lr, betas=betas, eps=eps, optimizer="keras", sync=sync)
    return make


def controls() -> dict:
    """Name -> a wrong trainer class that ``compare`` must fail."""
    return _controls()
