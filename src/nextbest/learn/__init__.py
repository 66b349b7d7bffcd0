"""Learning from feedback: propensity models and off-policy evaluation of candidate policies.

- ``model``: the ``PropensityModel`` protocol (``predict_one`` / ``learn_one``), ``OfferRef``,
  ``new_model``, ``load_model`` and ``describe`` (what ``nextbest models`` lists);
- ``bayes``: Beta-Bernoulli per (offer, placement), empirical-Bayes priors pooled by topic and
  kind, a position-based click model; Thompson sampling;
- ``contextual``: online logistic regression (River) over customer features crossed with the
  offer, position as a feature;
- ``features``: a profile and its context as sparse features;
- ``explore``: ranking with greedy, epsilon-greedy, softmax (Plackett-Luce) or Thompson
  sampling, each item with the probability it was placed there; per-campaign caps;
- ``ope``: off-policy estimates (IPS, SNIPS, DR) of a candidate policy on the decision log.

Every module is pure: time and randomness are arguments. Import the modules themselves, e.g.
``from nextbest.learn import ope``.
"""

__all__ = ["bayes", "contextual", "explore", "features", "model", "ope"]
